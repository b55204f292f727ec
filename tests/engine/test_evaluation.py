"""Evaluation on an MVTec-style folder, and the metrics behind it."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from engine_images import write_mvtec
from sklearn.metrics import average_precision_score, roc_auc_score

from davae.dataset import open_mvtec
from davae.errors import DavaeError
from davae.evaluation import evaluate, score_test_set
from davae.metrics import pixel_auroc, recall_at_fpr, score_metrics

SCORE_NAMES = ("recon_mean", "recon_max", "latent_euclidean", "latent_mahalanobis")
METRIC_KEYS = {
    "image_auroc",
    "aupr",
    "threshold",
    "precision",
    "recall",
    "f1",
    "fpr",
    "tp",
    "fp",
    "tn",
    "fn",
    "recall_at_fpr_1",
    "recall_at_fpr_5",
}


def assert_metrics_complete(metrics: dict) -> None:
    assert set(metrics) == METRIC_KEYS
    for key in METRIC_KEYS:
        assert math.isfinite(metrics[key]), key
    for key in ("image_auroc", "aupr", "precision", "recall", "f1", "fpr"):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.fixture(scope="module")
def report(tiny, mvtec_root):
    return evaluate(tiny.detector, mvtec_root)


def test_report_has_every_metric(report):
    assert_metrics_complete(report["combined"])
    assert set(report["scores"]) == set(SCORE_NAMES)
    for metrics in report["scores"].values():
        assert_metrics_complete(metrics)


def test_report_per_defect_class(report):
    assert set(report["per_class"]) == {"square", "dot"}
    for entry in report["per_class"].values():
        assert entry["count"] == 4
        assert_metrics_complete(entry["combined"])
        assert set(entry["scores"]) == set(SCORE_NAMES)
        for metrics in entry["scores"].values():
            assert_metrics_complete(metrics)
        # Each class is measured against all six test normals.
        assert entry["combined"]["tp"] + entry["combined"]["fn"] == 4
        assert entry["combined"]["fp"] + entry["combined"]["tn"] == 6


def test_report_counts_and_thresholds(report, tiny, mvtec_root):
    combined = report["combined"]

    assert report["counts"] == {"test_good": 6, "test_anomalous": 8, "rejected": 0}
    assert combined["tp"] + combined["fn"] == 8
    assert combined["fp"] + combined["tn"] == 6
    assert combined["threshold"] == 1.0
    assert report["thresholds"] == tiny.detector.thresholds.to_dict()
    assert report["dataset"] == str(mvtec_root)
    assert report["rejected"] == []


def test_report_pixel_auroc(report):
    assert math.isfinite(report["pixel_auroc"])
    assert report["pixel_auroc"] > 0.6


def test_obvious_defects_rank_above_normals(report):
    # Pasted 12-pixel white squares: even a two-epoch model ranks them high.
    assert report["per_class"]["square"]["combined"]["image_auroc"] > 0.75


def test_report_matches_scikit_learn(tiny, mvtec_root, report):
    scores = score_test_set(tiny.detector, open_mvtec(mvtec_root))
    labels = np.array([int(t.defect != "good") for t in scores.images])

    assert report["combined"]["image_auroc"] == pytest.approx(
        roc_auc_score(labels, scores.combined)
    )
    assert report["scores"]["recon_max"]["aupr"] == pytest.approx(
        average_precision_score(labels, scores.raw["recon_max"])
    )
    predicted = np.array(scores.anomalous)
    assert report["combined"]["tp"] == int((predicted & (labels == 1)).sum())
    assert report["combined"]["fp"] == int((predicted & (labels == 0)).sum())


def test_without_masks_pixel_auroc_is_nan(tiny, tmp_path):
    root = write_mvtec(tmp_path / "nomask", seed=8, with_masks=False)
    report = evaluate(tiny.detector, root)

    assert math.isnan(report["pixel_auroc"])
    assert_metrics_complete(report["combined"])


def test_unreadable_test_image_is_reported(tiny, tmp_path, mvtec_root):
    root = tmp_path / "damaged"
    shutil.copytree(mvtec_root, root)
    (root / "test" / "good" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    report = evaluate(tiny.detector, root)

    assert report["counts"]["rejected"] == 1
    assert report["counts"]["test_good"] == 6
    assert "zz_broken.png" in report["rejected"][0]["path"]
    assert_metrics_complete(report["combined"])


def test_open_mvtec_indexes_layout(mvtec_root, tmp_path):
    dataset = open_mvtec(mvtec_root)

    assert len(dataset.train_good) == 12
    assert len(dataset.test) == 14
    assert dataset.defect_classes == ["dot", "square"]
    for image in dataset.test:
        if image.is_anomalous:
            assert image.mask_path is not None
            assert image.mask_path.name == f"{image.path.stem}_mask.png"
        else:
            assert image.mask_path is None


@pytest.mark.parametrize(
    ("remove", "detail"),
    [
        ("train/good", "missing train/good"),
        ("test/good", "missing test/good"),
    ],
)
def test_missing_folder_is_layout_error(mvtec_root, tmp_path, remove, detail):
    root = tmp_path / "broken"
    shutil.copytree(mvtec_root, root)
    shutil.rmtree(root / remove)
    with pytest.raises(DavaeError) as caught:
        open_mvtec(root)

    assert caught.value.code == "dataset_layout"
    assert caught.value.params["detail"] == detail


def test_no_defect_images_is_layout_error(mvtec_root, tmp_path):
    root = tmp_path / "only-good"
    shutil.copytree(mvtec_root, root)
    for defect in ("square", "dot"):
        shutil.rmtree(root / "test" / defect)
    with pytest.raises(DavaeError) as caught:
        open_mvtec(root)

    assert caught.value.code == "dataset_layout"


def test_evaluate_needs_no_train_folder(tiny, mvtec_root, report, tmp_path):
    root = tmp_path / "test-only"
    shutil.copytree(mvtec_root / "test", root / "test")
    shutil.copytree(mvtec_root / "ground_truth", root / "ground_truth")

    test_only = evaluate(tiny.detector, root)

    assert test_only["combined"]["image_auroc"] == report["combined"]["image_auroc"]
    assert test_only["counts"]["test_good"] == report["counts"]["test_good"]


def test_open_mvtec_without_train_when_allowed(mvtec_root, tmp_path):
    root = tmp_path / "test-only"
    shutil.copytree(mvtec_root / "test", root / "test")

    dataset = open_mvtec(root, require_train=False)

    assert dataset.train_good == []
    assert len(dataset.test) == 14


def test_score_metrics_on_known_scores():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    strict = score_metrics(labels, scores, threshold=0.35)
    loose = score_metrics(labels, scores, threshold=0.15)

    assert strict["image_auroc"] == 1.0
    assert strict["aupr"] == 1.0
    assert (strict["precision"], strict["recall"], strict["fpr"]) == (1.0, 1.0, 0.0)
    assert (loose["tp"], loose["fp"], loose["tn"], loose["fn"]) == (2, 2, 1, 0)
    assert loose["fpr"] == pytest.approx(2 / 3)
    assert loose["precision"] == pytest.approx(0.5)
    assert loose["f1"] == pytest.approx(2 / 3)


def test_recall_at_fpr_limits_false_alarms():
    # 100 normals and 10 defects; 5 defects score above every normal, and
    # the other 5 sit just above the 4th-highest normal.
    normals = np.linspace(0.0, 1.0, 100)
    defects = np.r_[np.full(5, 2.0), np.full(5, normals[-4] + 1e-3)]
    labels = np.r_[np.zeros(100), np.ones(10)]
    scores = np.r_[normals, defects]

    assert recall_at_fpr(labels, scores, 0.01) == pytest.approx(0.5)
    assert recall_at_fpr(labels, scores, 0.05) == pytest.approx(1.0)


def test_single_class_metrics_are_nan():
    metrics = score_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.25)

    assert math.isnan(metrics["image_auroc"])
    assert math.isnan(metrics["recall_at_fpr_1"])
    assert metrics["fpr"] == 0.5


def test_pixel_auroc_cases():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    perfect = mask.astype(np.float32)

    assert pixel_auroc([mask], [perfect]) == 1.0
    assert pixel_auroc([mask], [1 - perfect]) == 0.0
    assert math.isnan(pixel_auroc([np.zeros((4, 4), dtype=bool)], [perfect]))
    assert math.isnan(pixel_auroc([], []))
