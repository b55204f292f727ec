"""Integration on real images: magnetic tiles, trained briefly on a subset.

The dataset sits outside the repository at ``../shared/data/magnetic-tile``
(an MVTec-style layout with masks). The test links a subset of it into a
temporary folder, trains a small model for a few epochs, and checks that
``evaluate`` reports every metric with a finite value. It measures plumbing
on real data, not detection quality.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from engine_images import tiny_config

from davae.bundle import save_bundle
from davae.cli import main
from davae.dataset import load_images, open_mvtec
from davae.training import train_detector

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET = REPO_ROOT.parent / "shared" / "data" / "magnetic-tile"
TRAIN_IMAGES = 80
TEST_GOOD_IMAGES = 30
TEST_IMAGES_PER_DEFECT = 8
SCORE_NAMES = ("recon_mean", "recon_max", "latent_euclidean", "latent_mahalanobis")
METRIC_KEYS = (
    "image_auroc",
    "aupr",
    "precision",
    "recall",
    "f1",
    "fpr",
    "recall_at_fpr_1",
    "recall_at_fpr_5",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATASET.is_dir(),
        reason="needs ../shared/data/magnetic-tile (real dataset; CI always has it)",
    ),
]


def link_subset(target: Path) -> Path:
    """Symlink an evenly spaced subset of the dataset, with its masks, under ``target``."""
    dataset = open_mvtec(DATASET)

    def spaced(items: list, count: int) -> list:
        step = max(1, len(items) // count)
        return items[::step][:count]

    def link(source: Path) -> None:
        destination = target / source.relative_to(DATASET)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, destination)

    for path in spaced(dataset.train_good, TRAIN_IMAGES):
        link(path)
    for defect in ["good", *dataset.defect_classes]:
        images = [t for t in dataset.test if t.defect == defect]
        count = TEST_GOOD_IMAGES if defect == "good" else TEST_IMAGES_PER_DEFECT
        for test_image in spaced(images, count):
            link(test_image.path)
            if test_image.mask_path is not None:
                link(test_image.mask_path)
    return target


def assert_finite_metrics(metrics: dict, where: str) -> None:
    for key in METRIC_KEYS:
        assert key in metrics, f"{where}: {key} missing"
        assert math.isfinite(metrics[key]), f"{where}: {key} = {metrics[key]}"


def test_magnetic_tile_evaluate_reports_every_metric(tmp_path, capsys):
    root = link_subset(tmp_path / "magnetic-tile")
    loaded = load_images([root / "train" / "good"], channels=1)
    assert len(loaded.pixels) == TRAIN_IMAGES
    assert loaded.rejected == []

    config = tiny_config(
        vae__image_size=64,
        vae__width=16,
        vae__latent_dim=16,
        vae__depth=3,
        train__epochs=4,
        train__batch_size=16,
    )
    detector = train_detector(loaded.pixels, config, fingerprint=loaded.fingerprint())
    model = tmp_path / "tile.pt"
    save_bundle(detector, model)
    report_path = tmp_path / "report.json"
    code = main(["evaluate", str(model), str(root), "--out", str(report_path)])
    report = json.loads(report_path.read_text(encoding="utf-8"))
    classes = ["blowhole", "break", "crack", "fray", "uneven"]

    assert code == 0
    assert report["counts"] == {
        "test_good": TEST_GOOD_IMAGES,
        "test_anomalous": TEST_IMAGES_PER_DEFECT * len(classes),
        "rejected": 0,
    }
    assert_finite_metrics(report["combined"], "combined")
    assert set(report["scores"]) == set(SCORE_NAMES)
    for name, metrics in report["scores"].items():
        assert_finite_metrics(metrics, name)
    assert sorted(report["per_class"]) == classes
    for defect, entry in report["per_class"].items():
        assert entry["count"] == TEST_IMAGES_PER_DEFECT
        assert_finite_metrics(entry["combined"], defect)
        for name, metrics in entry["scores"].items():
            assert_finite_metrics(metrics, f"{defect}/{name}")
    assert math.isfinite(report["pixel_auroc"])
    assert "pixel AUROC" in capsys.readouterr().out
