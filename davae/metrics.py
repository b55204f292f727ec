"""Detection metrics from scores and labels, all computed with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

# Every metric score_metrics reports for one score, in the order tables show them.
METRIC_NAMES = (
    "image_auroc",
    "aupr",
    "precision",
    "recall",
    "f1",
    "fpr",
    "recall_at_fpr_1",
    "recall_at_fpr_5",
)


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Best recall whose false-positive rate on the normals is at most ``max_fpr``.

    The threshold is chosen on the same normals it is measured on, so this
    is optimistic compared with a threshold calibrated beforehand.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.min() == labels.max():
        return math.nan
    fpr, tpr, _ = roc_curve(labels, scores)
    allowed = fpr <= max_fpr + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def decision_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate of binary predictions (1 = anomalous)."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "fpr": float(fp / (fp + tn)) if (fp + tn) else math.nan,
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def score_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking metrics of ``scores`` and decision metrics at ``threshold`` (over = anomalous)."""
    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)
    both_classes = labels.min() != labels.max()
    result: dict[str, float] = {
        "image_auroc": float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        "aupr": float(average_precision_score(labels, scores)) if both_classes else math.nan,
        "threshold": float(threshold),
    }
    result.update(decision_metrics(labels, scores > threshold))
    result["recall_at_fpr_1"] = recall_at_fpr(labels, scores, 0.01) if both_classes else math.nan
    result["recall_at_fpr_5"] = recall_at_fpr(labels, scores, 0.05) if both_classes else math.nan
    return result


def pixel_auroc(masks: list[np.ndarray], maps: list[np.ndarray]) -> float:
    """AUROC over all pixels of binary ``masks`` against same-shaped anomaly ``maps``."""
    if not masks:
        return math.nan
    truth = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks])
    values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    if truth.all() or not truth.any():
        return math.nan
    return float(roc_auc_score(truth, values))
