"""The Review page's computations: live labels, review band, filters, order, bins, agreement."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ui import review_data
from ui.review_data import (
    ANOMALOUS,
    ANOMALOUS_LABEL,
    NO_LABEL,
    NORMAL,
    NORMAL_LABEL,
    REVIEW,
    LiveThresholds,
)


def frame(recon, latent, human=None) -> pd.DataFrame:
    """A scored frame as ``scored_frame`` builds it, from score lists."""
    count = len(recon)
    human = [NO_LABEL] * count if human is None else human
    return pd.DataFrame(
        {
            "image_id": np.arange(1, count + 1, dtype=np.int64),
            "position": np.arange(count, dtype=np.int64),
            "file_name": [f"{index:03d}.png" for index in range(count)],
            "folder": [""] * count,
            "stored_path": [""] * count,
            "heatmap_path": [""] * count,
            "recon": np.asarray(recon, dtype=np.float64),
            "latent": np.asarray(latent, dtype=np.float64),
            "stored_combined": np.zeros(count),
            "stored_auto": np.zeros(count, dtype=np.int8),
            "human": np.asarray(human, dtype=np.int8),
            "reviewer": [None] * count,
            "reviewed_at": [None] * count,
        }
    )


def test_either_score_over_threshold_is_anomalous() -> None:
    scores = frame(recon=[0.5, 1.5, 0.5, 1.0, 1.5], latent=[5.0, 5.0, 15.0, 10.0, 15.0])
    decisions = review_data.decide(scores, LiveThresholds(recon=1.0, latent=10.0))
    # Exactly at a threshold is still normal: the rule is "strictly above".
    assert decisions.auto.tolist() == [0, 1, 1, 0, 1]
    np.testing.assert_allclose(decisions.combined, [0.5, 1.5, 1.5, 1.0, 1.5])


def test_combined_uses_live_thresholds() -> None:
    scores = frame(recon=[0.2], latent=[3.0])
    first = review_data.decide(scores, LiveThresholds(recon=0.1, latent=10.0))
    second = review_data.decide(scores, LiveThresholds(recon=0.4, latent=2.0))
    assert first.combined[0] == pytest.approx(2.0)
    assert second.combined[0] == pytest.approx(1.5)


def test_missing_latent_leaves_recon_deciding() -> None:
    scores = frame(recon=[0.5, 2.0], latent=[np.nan, np.nan])
    decisions = review_data.decide(scores, LiveThresholds(recon=1.0, latent=10.0))
    assert decisions.auto.tolist() == [0, 1]
    np.testing.assert_allclose(decisions.combined, [0.5, 2.0])


def test_band_classes_inclusive_edges() -> None:
    # Combined scores 0.5, 0.8, 1.0, 1.2, 1.3 with recon threshold 1 and a latent term of 0.
    scores = frame(recon=[0.5, 0.8, 1.0, 1.2, 1.3], latent=[0.0] * 5)
    band = LiveThresholds(recon=1.0, latent=10.0, review_low=0.8, review_high=1.2)
    decisions = review_data.decide(scores, band)
    assert decisions.auto_class.tolist() == [NORMAL, REVIEW, REVIEW, REVIEW, ANOMALOUS]
    without = review_data.decide(scores, LiveThresholds(recon=1.0, latent=10.0))
    assert without.auto_class.tolist() == [NORMAL, NORMAL, NORMAL, ANOMALOUS, ANOMALOUS]


def test_human_label_overrides_class() -> None:
    scores = frame(
        recon=[2.0, 0.1, 1.0, 0.1],
        latent=[0.0] * 4,
        human=[NORMAL_LABEL, ANOMALOUS_LABEL, NO_LABEL, NORMAL_LABEL],
    )
    band = LiveThresholds(recon=1.0, latent=10.0, review_low=0.9, review_high=1.1)
    decisions = review_data.decide(scores, band)
    assert decisions.current.tolist() == [NORMAL, ANOMALOUS, REVIEW, NORMAL]
    counts = review_data.count(decisions)
    assert (counts.normal, counts.review, counts.anomalous) == (2, 1, 1)
    assert counts.human_reviewed == 3
    assert counts.changed == 2  # rows 0 and 1 disagree with the thresholds
    assert counts.auto_anomalous == 1
    assert counts.total == 4


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("all", [0, 1, 2, 3, 4]),
        ("anomalous", [0, 4]),
        ("normal", [1, 3]),
        ("review", [2]),
        ("unreviewed", [2, 4]),
        ("changed", [0, 1]),
    ],
)
def test_filter_masks(name: str, expected: list[int]) -> None:
    scores = frame(
        recon=[0.1, 2.0, 1.0, 0.1, 3.0],
        latent=[0.0] * 5,
        human=[ANOMALOUS_LABEL, NORMAL_LABEL, NO_LABEL, NORMAL_LABEL, NO_LABEL],
    )
    band = LiveThresholds(recon=1.0, latent=10.0, review_low=0.9, review_high=1.1)
    decisions = review_data.decide(scores, band)
    assert np.flatnonzero(review_data.filter_mask(decisions, name)).tolist() == expected


def test_unknown_filter_raises() -> None:
    decisions = review_data.decide(frame([1.0], [1.0]), LiveThresholds(1.0, 1.0))
    with pytest.raises(ValueError, match="unknown gallery filter 'broken'"):
        review_data.filter_mask(decisions, "broken")


def test_gallery_order_ties_keep_upload_order() -> None:
    scores = frame(recon=[0.2, 0.9, 0.5, 0.9, 0.1], latent=[0.0] * 5)
    decisions = review_data.decide(scores, LiveThresholds(1.0, 10.0))
    every = np.ones(5, dtype=bool)
    assert review_data.gallery_order(scores, decisions, every, "score_desc").tolist() == [
        1,
        3,
        2,
        0,
        4,
    ]
    assert review_data.gallery_order(scores, decisions, every, "score_asc").tolist() == [
        4,
        0,
        2,
        1,
        3,
    ]
    some = np.array([True, False, True, True, False])
    assert review_data.gallery_order(scores, decisions, some, "upload").tolist() == [0, 2, 3]


def test_page_span_clamps() -> None:
    assert review_data.page_span(21, 4, 6) == review_data.PageSpan(4, 4, 18, 21)
    assert review_data.page_span(21, 9, 6).page == 4
    assert review_data.page_span(21, 0, 6).page == 1
    assert review_data.page_span(0, 3, 6) == review_data.PageSpan(1, 1, 0, 0)


def test_slider_bounds_cover_scores_and_anchors() -> None:
    bounds = review_data.slider_bounds(np.array([0.01, 0.02, 0.031]), (0.05, None))
    assert bounds.low > 0
    assert bounds.high >= 0.05
    assert bounds.low == pytest.approx(bounds.step)
    assert (bounds.high / bounds.step) == pytest.approx(round(bounds.high / bounds.step))
    assert bounds.clamp(-1.0) == bounds.low
    assert bounds.clamp(99.0) == bounds.high
    decimals = int(bounds.format.removeprefix("%.").removesuffix("f"))
    assert 10.0**-decimals <= bounds.step


def test_slider_bounds_for_large_scores() -> None:
    bounds = review_data.slider_bounds(np.array([120.0, 800.0, np.nan]), (300.0,))
    assert bounds.high >= 800.0
    assert bounds.format == "%.0f"


def test_class_histogram_counts_every_finite_value() -> None:
    values = np.array([0.0, 0.1, 0.5, 0.9, 1.0, 5.0, np.nan])
    classes = np.array([NORMAL, NORMAL, REVIEW, ANOMALOUS, ANOMALOUS, ANOMALOUS, NORMAL])
    edges = review_data.bin_edges(values[:5], bins=4)
    counts = review_data.class_histogram(values, classes, edges)
    assert counts.shape == (3, 4)
    assert counts.sum() == 6
    assert counts[NORMAL].tolist() == [2, 0, 0, 0]
    assert counts[REVIEW].tolist() == [0, 0, 1, 0]
    # 1.0 is the last edge and 5.0 lies past it: both go to the last bin.
    assert counts[ANOMALOUS].tolist() == [0, 0, 0, 3]


def test_bin_edges_include_lines() -> None:
    edges = review_data.bin_edges(np.array([1.0, 2.0]), bins=10, extra=[5.0])
    assert edges[0] == 1.0
    assert edges[-1] == 5.0
    flat = review_data.bin_edges(np.array([3.0, 3.0]), bins=2)
    assert flat[-1] > flat[0]


def test_agreement_against_human_labels() -> None:
    # human: N N A A A, auto from recon: A N A N A (threshold 1).
    scores = frame(
        recon=[2.0, 0.5, 2.0, 0.5, 3.0, 9.0],
        latent=[0.0] * 6,
        human=[*[NORMAL_LABEL] * 2, *[ANOMALOUS_LABEL] * 3, NO_LABEL],
    )
    result = review_data.agreement(review_data.decide(scores, LiveThresholds(1.0, 10.0)))
    assert result is not None
    assert result.matrix.tolist() == [[1, 1], [1, 2]]
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert result.labelled == 5


def test_agreement_without_human_labels_is_none() -> None:
    decisions = review_data.decide(frame([2.0], [0.0]), LiveThresholds(1.0, 10.0))
    assert review_data.agreement(decisions) is None


def test_agreement_precision_undefined_without_auto_anomalies() -> None:
    scores = frame(recon=[0.1, 0.2], latent=[0.0, 0.0], human=[ANOMALOUS_LABEL, NORMAL_LABEL])
    result = review_data.agreement(review_data.decide(scores, LiveThresholds(1.0, 10.0)))
    assert math.isnan(result.precision)
    assert result.recall == 0.0


def test_as_stored_keeps_scoring_settings() -> None:
    base = {
        "recon": 0.1,
        "latent": 9.0,
        "recon_reduction": "max",
        "latent_metric": "mahalanobis",
        "target_fpr": 0.01,
        "review_low": None,
        "review_high": None,
    }
    stored = LiveThresholds(0.2, 8.0, 0.9, 1.1).as_stored(base)
    assert stored == {**base, "recon": 0.2, "latent": 8.0, "review_low": 0.9, "review_high": 1.1}
    assert LiveThresholds(0.2, 8.0).as_stored(base)["review_low"] is None


def test_differs_from_stored_thresholds() -> None:
    stored = {"recon": 0.2, "latent": 8.0, "review_low": None, "review_high": None}
    assert not LiveThresholds(0.2, 8.0).differs_from(stored)
    assert not LiveThresholds(0.2 + 1e-15, 8.0).differs_from(stored)
    assert LiveThresholds(0.21, 8.0).differs_from(stored)
    assert LiveThresholds(0.2, 8.5).differs_from(stored)
    assert LiveThresholds(0.2, 8.0, 0.9, 1.1).differs_from(stored)
    banded = {**stored, "review_low": 0.9, "review_high": 1.1}
    assert not LiveThresholds(0.2, 8.0, 0.9, 1.1).differs_from(banded)
    assert LiveThresholds(0.2, 8.0).differs_from(banded)


def test_scored_frame_skips_unscored_rows() -> None:
    def row(image_id, status, recon, human=None):
        return SimpleNamespace(
            image_id=image_id,
            position=image_id,
            file_name=f"{image_id}.png",
            folder="",
            stored_path="originals/x",
            heatmap_path="heatmaps/x.png",
            status=status,
            recon_score=recon,
            latent_euclidean=1.0,
            latent_mahalanobis=2.0,
            latent_multiscale=None,
            combined_score=0.5,
            auto_label="normal" if recon is not None else None,
            human_label=human,
            reviewer=None,
            reviewed_at=None,
        )

    rows = [row(1, "scored", 0.1, "anomalous"), row(2, "pending", None), row(3, "scored", 0.3)]
    built = review_data.scored_frame(rows, "mahalanobis")
    assert built["image_id"].tolist() == [1, 3]
    assert built["latent"].tolist() == [2.0, 2.0]
    assert built["human"].tolist() == [ANOMALOUS_LABEL, NO_LABEL]
    multiscale = review_data.scored_frame(rows, "multiscale")
    assert multiscale["latent"].isna().all()
