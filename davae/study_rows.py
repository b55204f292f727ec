"""The rows of a comparative study: metrics of every method and setting, run information.

:func:`build_result` turns the scores of every method into the rows of
``results.csv`` and ``imbalance_runs.csv``, the per-image score table and
the run information of ``study.json``.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import davae
from davae.metrics import score_metrics
from davae.study_data import StudyData, imbalance_subset
from davae.study_plan import METHODS, StudySettings, VaeRow, config_changes
from davae.study_report import (
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    RUN_COLUMNS,
    StudyResult,
    normalise_results,
    normalise_runs,
)
from davae.study_summary import summary_markdown

if TYPE_CHECKING:
    from davae.study import MethodScores


def build_result(
    directory: Path,
    settings: StudySettings,
    data: StudyData,
    vae_rows: list[tuple[VaeRow, MethodScores]],
    baselines: dict[str, MethodScores],
    run_info: dict[str, Any],
) -> StudyResult:
    """Compute every row's metrics and assemble the result (nothing is written)."""
    labels = data.labels
    seed = settings.config.train.seed
    share = float(labels.mean())
    main_rows: list[dict[str, Any]] = []
    ablation_rows: list[dict[str, Any]] = []
    main: dict[str, MethodScores] = {}
    for row, scores in vae_rows:
        entry = _metrics_row(labels, scores, row.study, row.method, seed, share)
        entry.update(augment=row.augment, iterations=row.iterations)
        if row.study == "main":
            main[row.method] = scores
            main_rows.append(entry)
        else:
            ablation_rows.append(entry)
    for name, scores in baselines.items():
        main[name] = scores
        main_rows.append(_metrics_row(labels, scores, "main", name, seed, share))

    imbalance_rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    if settings.imbalance:
        settings_by_method = {row["method"]: row for row in main_rows}
        for method in (m for m in METHODS if m in main):
            for target in settings.defect_shares:
                method_runs = _imbalance_runs(labels, main[method], method, target, settings.seeds)
                runs += method_runs
                entry = _imbalance_row(method_runs, main[method], target, seed)
                for column in ("augment", "iterations"):
                    entry[column] = settings_by_method[method].get(column)
                imbalance_rows.append(entry)
    rows = main_rows + ablation_rows + imbalance_rows

    score_table = pd.DataFrame(
        {
            "image": [data.relative_path(image) for image in data.evaluation],
            "defect": [image.defect for image in data.evaluation],
            "label": labels,
            **{method: main[method].scores for method in METHODS if method in main},
        }
    )
    info = {
        **run_info,
        "library_version": davae.__version__,
        "settings": settings.to_dict(),
        "config_changes": config_changes(settings.config),
        "machine": machine_info(settings.config.train.device),
        "counts": _counts(data),
        "labelled_defects": [data.relative_path(image) for image in data.labelled_defects],
        "rejected": data.rejected,
        "models": _model_table(vae_rows),
    }
    result = StudyResult(
        directory=directory,
        results=normalise_results(pd.DataFrame(rows, columns=list(RESULT_COLUMNS))),
        imbalance_runs=normalise_runs(pd.DataFrame(runs, columns=list(RUN_COLUMNS))),
        scores=score_table,
        info=info,
        summary="",
    )
    result.summary = summary_markdown(result)
    return result


def _metrics_row(
    labels: np.ndarray, scores: MethodScores, study: str, method: str, seed: int, share: float
) -> dict[str, Any]:
    metrics = score_metrics(labels, scores.scores, scores.threshold)
    return {
        "study": study,
        "method": method,
        "defect_share": share,
        "defect_share_actual": share,
        "seed": seed,
        "n_test_good": int((labels == 0).sum()),
        "n_test_anomalous": int((labels == 1).sum()),
        **{name: metrics[name] for name in (*METRIC_COLUMNS, "threshold", "tp", "fp", "tn", "fn")},
        "train_seconds": scores.train_seconds,
        "epochs_run": scores.epochs_run,
        "cached": scores.cached,
        "model_key": scores.model_key,
    }


def _imbalance_runs(
    labels: np.ndarray, scores: MethodScores, method: str, target: float, seeds: int
) -> list[dict[str, Any]]:
    runs = []
    for subsample_seed in range(seeds):
        subset, actual = imbalance_subset(labels, target, subsample_seed)
        metrics = score_metrics(labels[subset], scores.scores[subset], scores.threshold)
        runs.append(
            {
                "method": method,
                "defect_share": target,
                "defect_share_actual": actual,
                "subsample_seed": subsample_seed,
                "n_test_good": int((labels[subset] == 0).sum()),
                "n_test_anomalous": int((labels[subset] == 1).sum()),
                **{name: metrics[name] for name in (*METRIC_COLUMNS, "threshold")},
            }
        )
    return runs


def _imbalance_row(
    runs: list[dict[str, Any]], scores: MethodScores, target: float, seed: int
) -> dict[str, Any]:
    """Average the runs of one method and share; the std is the sample standard deviation."""
    frame = pd.DataFrame(runs)
    row: dict[str, Any] = {
        "study": "imbalance",
        "method": runs[0]["method"],
        "defect_share": target,
        "defect_share_actual": float(frame["defect_share_actual"].mean()),
        "seed": seed,
        "n_seeds": len(runs),
        "n_test_good": int(frame["n_test_good"].iloc[0]),
        "n_test_anomalous": int(frame["n_test_anomalous"].iloc[0]),
        "threshold": scores.threshold,
        "train_seconds": scores.train_seconds,
        "epochs_run": scores.epochs_run,
        "cached": scores.cached,
        "model_key": scores.model_key,
    }
    for name in METRIC_COLUMNS:
        values = frame[name].to_numpy(dtype=np.float64)
        row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        # One seed has no spread to estimate: the std stays empty rather than 0.
        row[f"{name}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else math.nan
    return row


def _counts(data: StudyData) -> dict[str, Any]:
    labels = data.labels
    per_class: dict[str, int] = {}
    for image in data.evaluation:
        per_class[image.defect] = per_class.get(image.defect, 0) + 1
    return {
        "train_normals": len(data.train_pixels),
        "fit_normals": len(data.fit_index),
        "calibration_normals": len(data.calibration_index),
        "test_good": int((labels == 0).sum()),
        "test_anomalous": int((labels == 1).sum()),
        "test_per_class": per_class,
        "labelled_defects": len(data.labelled_defects),
        "labelled_normals": len(data.labelled_normal_index),
        "rejected_test_files": len(data.rejected),
    }


def _model_table(vae_rows: list[tuple[VaeRow, MethodScores]]) -> list[dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for row, scores in vae_rows:
        entry = models.setdefault(
            scores.model_key,
            {
                "model_key": scores.model_key,
                "augment": row.augment,
                "iterations": row.iterations,
                "train_seconds": scores.train_seconds,
                "epochs_run": scores.epochs_run,
                "cached": scores.cached,
                "rows": [],
            },
        )
        entry["rows"].append(f"{row.study}:{row.method}:{row.augment}:{row.iterations}")
    return list(models.values())


def machine_info(device: str = "auto") -> dict[str, Any]:
    """Describe the machine: platform, CPU, thread count, torch version and training device."""
    import torch

    from davae.detector import choose_device

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    chosen = choose_device(device)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if chosen.type == "cuda" else "cpu",
    }
