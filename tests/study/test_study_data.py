"""The study's data protocol: labelled defects for the random forest and imbalance subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from davae import dataset
from davae.study_data import choose_labelled_defects, imbalance_subset


def _labels(normals: int, defects: int) -> np.ndarray:
    return np.array([0] * normals + [1] * defects)


@pytest.mark.parametrize("share", [0.5, 0.1, 0.01])
def test_imbalance_share_and_normals(share: float) -> None:
    labels = _labels(100, 200)
    subset, actual = imbalance_subset(labels, share, seed=0)
    chosen = labels[subset]
    expected_defects = round(share * 100 / (1 - share))

    assert (chosen == 0).sum() == 100
    assert (chosen == 1).sum() == expected_defects
    assert actual == pytest.approx(expected_defects / (100 + expected_defects))
    assert len(set(subset.tolist())) == len(subset)


def test_imbalance_keeps_at_least_one_defect() -> None:
    subset, actual = imbalance_subset(_labels(20, 30), 0.01, seed=0)
    assert (_labels(20, 30)[subset] == 1).sum() == 1
    assert actual == pytest.approx(1 / 21)


def test_imbalance_uses_every_defect_when_too_few() -> None:
    subset, actual = imbalance_subset(_labels(100, 10), 0.5, seed=0)
    assert len(subset) == 110
    assert actual == pytest.approx(10 / 110)


def test_imbalance_seeds_differ_and_nest() -> None:
    labels = _labels(100, 200)
    first, _ = imbalance_subset(labels, 0.1, seed=0)
    other, _ = imbalance_subset(labels, 0.1, seed=1)
    smaller, _ = imbalance_subset(labels, 0.01, seed=0)

    assert set(first.tolist()) != set(other.tolist())
    assert set(smaller.tolist()) <= set(first.tolist())


def test_labelled_defects_at_most_half_per_class() -> None:
    images = [dataset.TestImage(Path(f"good/{i}.png"), "good", None) for i in range(5)]
    for defect, count in (("crack", 1), ("dent", 3), ("scratch", 20)):
        images += [dataset.TestImage(Path(f"{defect}/{i}.png"), defect, None) for i in range(count)]

    chosen = choose_labelled_defects(images, per_class=10, seed=0)
    classes = [images[i].defect for i in chosen]

    assert classes.count("crack") == 0
    assert classes.count("dent") == 1
    assert classes.count("scratch") == 10
    assert "good" not in classes
    assert chosen == sorted(chosen)
    assert chosen == choose_labelled_defects(images, per_class=10, seed=0)
