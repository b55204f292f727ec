"""The Review page's computations: live labels, the review band, filters, histograms, metrics.

Nothing here imports Streamlit or torch or reads the database. The page loads
a batch once into a frame (:func:`scored_frame`), and every move of a
threshold slider recomputes labels, counts and histogram bars from the stored
scores with numpy, so the model never runs.

Labels and classes are small integers, so a 10,000-image batch is recomputed
in a few vectorised operations:

- label codes (stored and live labels): ``NORMAL_LABEL`` 0, ``ANOMALOUS_LABEL``
  1, ``NO_LABEL`` -1;
- class codes (what the page counts, filters and colours): ``NORMAL`` 0,
  ``REVIEW`` 1 ("needs review", inside the review band), ``ANOMALOUS`` 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

NO_LABEL, NORMAL_LABEL, ANOMALOUS_LABEL = -1, 0, 1
LABEL_VALUES = ("normal", "anomalous")  # indexed by label code
NORMAL, REVIEW, ANOMALOUS = 0, 1, 2
CLASS_NAMES = ("normal", "review", "anomalous")  # indexed by class code

FILTERS = ("all", "anomalous", "normal", "review", "unreviewed", "changed")
SORTS = ("score_desc", "score_asc", "upload")

FRAME_COLUMNS = (
    "image_id",
    "position",
    "file_name",
    "folder",
    "stored_path",
    "heatmap_path",
    "recon",
    "latent",
    "stored_combined",
    "stored_auto",
    "human",
    "reviewer",
    "reviewed_at",
)


def label_code(value: object) -> int:
    """Return the label code of a stored label value ("normal", "anomalous" or None)."""
    if value is None:
        return NO_LABEL
    return LABEL_VALUES.index(str(value))


def scored_frame(rows: Iterable[Any], latent_metric: str) -> pd.DataFrame:
    """Build the frame of a batch's scored images from ``storage.review.batch_table`` rows.

    ``latent`` is the latent distance named by ``latent_metric`` ("mahalanobis",
    "euclidean" or "multiscale"), the one the thresholds apply to, and NaN
    where the row has none. Images that are pending or rejected have no
    scores and are left out.
    """
    latent_field = f"latent_{latent_metric}"
    records = [
        (
            row.image_id,
            row.position,
            row.file_name,
            row.folder,
            row.stored_path,
            row.heatmap_path,
            row.recon_score,
            getattr(row, latent_field),
            row.combined_score,
            label_code(row.auto_label),
            label_code(row.human_label),
            row.reviewer,
            row.reviewed_at,
        )
        for row in rows
        if row.recon_score is not None
    ]
    frame = pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS))
    return frame.astype(
        {
            "image_id": np.int64,
            "position": np.int64,
            "recon": np.float64,
            "latent": np.float64,
            "stored_combined": np.float64,
            "stored_auto": np.int8,
            "human": np.int8,
        }
    )


@dataclass(frozen=True)
class LiveThresholds:
    """The thresholds on the sliders, and the optional review band on the combined score."""

    recon: float
    latent: float
    review_low: float | None = None
    review_high: float | None = None

    @property
    def has_band(self) -> bool:
        return self.review_low is not None and self.review_high is not None

    def differs_from(self, stored: Mapping[str, Any]) -> bool:
        """Tell whether these thresholds or this band differ from a stored thresholds object."""

        def same(a: float | None, b: float | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

        pairs = (
            (self.recon, stored["recon"]),
            (self.latent, stored["latent"]),
            (self.review_low, stored.get("review_low")),
            (self.review_high, stored.get("review_high")),
        )
        return not all(same(live, kept) for live, kept in pairs)

    def as_stored(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``base`` (a stored thresholds object) with these values in it.

        The reduction, the metric and any other key of ``base`` (such as
        ``target_fpr``) are kept, because the stored scores were computed with them.
        """
        return {
            **base,
            "recon": float(self.recon),
            "latent": float(self.latent),
            "review_low": None if self.review_low is None else float(self.review_low),
            "review_high": None if self.review_high is None else float(self.review_high),
        }


@dataclass(frozen=True)
class Decisions:
    """Live decisions for every row of a scored frame, in the frame's order."""

    combined: np.ndarray  # float64: max(recon / t_recon, latent / t_latent)
    auto: np.ndarray  # int8 label code from the thresholds alone
    auto_class: np.ndarray  # int8 class code: the auto label, REVIEW inside the band
    current: np.ndarray  # int8 class code: the human label where there is one, else auto_class
    human: np.ndarray  # int8 label code of the latest human label, NO_LABEL where none


def decide(frame: pd.DataFrame, thresholds: LiveThresholds) -> Decisions:
    """Compute live labels and classes from stored scores and the thresholds in force.

    The auto label compares each score with its threshold, as
    ``storage.thresholds.decide_label`` does: anomalous when either score is
    strictly above. The combined score is computed from the raw scores, because
    the stored one belongs to the thresholds used at scoring time. With a band,
    a combined score from ``review_low`` to ``review_high`` inclusive needs review.
    """
    recon = frame["recon"].to_numpy()
    latent = frame["latent"].to_numpy()
    # A latent distance can be missing (NaN): a multi-scale metric on a row
    # scored without it. fmax ignores it, and NaN > t is False, so the
    # reconstruction score alone decides, as in storage.thresholds.decide_label.
    combined = np.fmax(recon / thresholds.recon, latent / thresholds.latent)
    anomalous = (recon > thresholds.recon) | (latent > thresholds.latent)
    auto = anomalous.astype(np.int8)
    auto_class = (auto * ANOMALOUS).astype(np.int8)
    if thresholds.has_band:
        in_band = (combined >= thresholds.review_low) & (combined <= thresholds.review_high)
        auto_class[in_band] = REVIEW
    human = frame["human"].to_numpy()
    reviewed = human != NO_LABEL
    current = np.where(reviewed, human * ANOMALOUS, auto_class).astype(np.int8)
    return Decisions(
        combined=combined, auto=auto, auto_class=auto_class, current=current, human=human
    )


@dataclass(frozen=True)
class Counts:
    """Scored images by current class, and how many a human has labelled."""

    normal: int
    review: int
    anomalous: int
    human_reviewed: int
    changed: int  # human label differs from the live auto label
    auto_anomalous: int  # live auto labels alone, humans ignored
    total: int


def count(decisions: Decisions) -> Counts:
    by_class = np.bincount(decisions.current, minlength=3)
    reviewed = decisions.human != NO_LABEL
    return Counts(
        normal=int(by_class[NORMAL]),
        review=int(by_class[REVIEW]),
        anomalous=int(by_class[ANOMALOUS]),
        human_reviewed=int(reviewed.sum()),
        changed=int((reviewed & (decisions.human != decisions.auto)).sum()),
        auto_anomalous=int(decisions.auto.sum()),
        total=len(decisions.current),
    )


def filter_mask(decisions: Decisions, name: str) -> np.ndarray:
    """Return the rows a gallery filter shows, as a boolean mask.

    ``changed`` means a human label that differs from the live auto label,
    so it follows the sliders like everything else on the page.
    """
    reviewed = decisions.human != NO_LABEL
    if name == "all":
        return np.ones(len(decisions.current), dtype=bool)
    if name == "anomalous":
        return decisions.current == ANOMALOUS
    if name == "normal":
        return decisions.current == NORMAL
    if name == "review":
        return decisions.current == REVIEW
    if name == "unreviewed":
        return ~reviewed
    if name == "changed":
        return reviewed & (decisions.human != decisions.auto)
    raise ValueError(f"unknown gallery filter {name!r}; expected one of {FILTERS}")


def gallery_order(
    frame: pd.DataFrame, decisions: Decisions, mask: np.ndarray, sort: str
) -> np.ndarray:
    """Return the row numbers the gallery shows, in display order.

    Equal scores keep upload order, so a page never reshuffles between reruns.
    """
    rows = np.flatnonzero(mask)
    if sort == "upload":
        keys = frame["position"].to_numpy()[rows]
        return rows[np.argsort(keys, kind="stable")]
    if sort not in ("score_desc", "score_asc"):
        raise ValueError(f"unknown gallery order {sort!r}; expected one of {SORTS}")
    scores = decisions.combined[rows]
    positions = frame["position"].to_numpy()[rows]
    primary = -scores if sort == "score_desc" else scores
    return rows[np.lexsort((positions, primary))]


@dataclass(frozen=True)
class PageSpan:
    page: int  # 1-based, clamped to the pages there are
    pages: int
    start: int  # first row on the page, 0-based
    stop: int  # one past the last row


def page_span(total: int, page: int, page_size: int) -> PageSpan:
    """Return the rows of one gallery page; an out-of-range page is clamped."""
    pages = max(1, math.ceil(total / page_size))
    page = min(max(1, page), pages)
    start = (page - 1) * page_size
    return PageSpan(page=page, pages=pages, start=start, stop=min(total, start + page_size))


@dataclass(frozen=True)
class SliderBounds:
    """Range, step and printf-style format of one threshold slider."""

    low: float
    high: float
    step: float
    format: str

    def clamp(self, value: float) -> float:
        return min(max(float(value), self.low), self.high)


def _nice_step(span: float, steps: int) -> float:
    # The largest of 1, 2 or 5 times a power of ten that gives at least ``steps`` steps.
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (5.0, 2.0, 1.0):
        if factor * power <= raw:
            return factor * power
    return power


def slider_bounds(values: np.ndarray, anchors: Sequence[float], steps: int = 500) -> SliderBounds:
    """Choose a threshold slider's range: from one step above 0 to past every score and anchor.

    ``anchors`` are thresholds the slider must reach, such as the calibrated
    one and the batch's last applied one. A threshold must be positive, so
    the range starts one step above 0.
    """
    finite = values[np.isfinite(values)] if len(values) else values
    candidates = [float(finite.max())] if len(finite) else []
    candidates += [float(anchor) for anchor in anchors if anchor is not None and anchor > 0]
    top = max(candidates, default=1.0) * 1.1
    if not top > 0:
        top = 1.0
    step = _nice_step(top, steps)
    decimals = max(0, -math.floor(math.log10(step)))
    high = round(math.ceil(top / step) * step, decimals + 2)
    return SliderBounds(
        low=round(step, decimals + 2), high=high, step=step, format=f"%.{decimals}f"
    )


def bin_edges(values: np.ndarray, bins: int = 40, extra: Sequence[float] = ()) -> np.ndarray:
    """Return ``bins + 1`` equal-width edges over the values and any ``extra`` points."""
    values = values[np.isfinite(values)]
    points = [float(values.min()), float(values.max())] if len(values) else []
    points += [float(point) for point in extra if point is not None and math.isfinite(point)]
    low, high = (min(points), max(points)) if points else (0.0, 1.0)
    if high <= low:
        high = low + max(abs(low) * 0.01, 1e-9)
    return np.linspace(low, high, bins + 1)


def class_histogram(values: np.ndarray, classes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Count values per bin and class: an array of shape (3, bins), one row per class code.

    Values outside the edges go to the first or the last bin; NaN values are left out.
    """
    bins = len(edges) - 1
    finite = np.isfinite(values)
    values, classes = values[finite], classes[finite]
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    flat = np.bincount(classes.astype(np.intp) * bins + index, minlength=3 * bins)
    return flat.reshape(3, bins)


@dataclass(frozen=True)
class Agreement:
    """The live auto labels against human labels, over the images a human labelled.

    ``matrix[i][j]`` counts images with human label i and auto label j
    (0 normal, 1 anomalous). Precision and recall treat anomalous as the
    positive class. They are NaN when undefined (no auto or no human anomalies).
    """

    matrix: np.ndarray
    precision: float
    recall: float
    labelled: int


def agreement(decisions: Decisions) -> Agreement | None:
    """Compare the live auto labels with human labels; None when no human label exists."""
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    reviewed = decisions.human != NO_LABEL
    if not reviewed.any():
        return None
    truth = decisions.human[reviewed]
    predicted = decisions.auto[reviewed]
    labels = [NORMAL_LABEL, ANOMALOUS_LABEL]
    return Agreement(
        matrix=confusion_matrix(truth, predicted, labels=labels),
        precision=float(precision_score(truth, predicted, labels=labels, zero_division=np.nan)),
        recall=float(recall_score(truth, predicted, labels=labels, zero_division=np.nan)),
        labelled=int(reviewed.sum()),
    )
