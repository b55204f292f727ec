"""The Review page's figures: score histograms coloured by live class, and the agreement table.

Histograms are drawn as stacked bars from counts that ``review_data``
computes with numpy, so a figure contains 40 numbers per class
however large the batch is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui import review_data
from ui.i18n import t
from ui.review_data import ANOMALOUS, NORMAL, REVIEW, Agreement

CLASS_COLORS = {NORMAL: "#1f5f8b", REVIEW: "#e0a100", ANOMALOUS: "#d1495b"}
THRESHOLD_COLOR = "#333333"
BAND_COLOR = "#e0a100"
BINS = 40


@dataclass(frozen=True)
class Line:
    """A vertical line over a histogram, with its label."""

    x: float
    text: str
    color: str = THRESHOLD_COLOR
    dash: str = "dash"


def class_name(code: int) -> str:
    return t(f"review.class.{review_data.CLASS_NAMES[code]}")


def histogram_figure(
    values: np.ndarray,
    classes: np.ndarray,
    title: str,
    x_title: str,
    lines: Sequence[Line],
    *,
    show_review: bool,
) -> go.Figure:
    """Draw a stacked histogram of ``values``, one colour per class, with vertical lines.

    The bins span the values and the lines, so a threshold is always in view.
    """
    edges = review_data.bin_edges(values, BINS, [line.x for line in lines])
    counts = review_data.class_histogram(values, classes, edges)
    centers = (edges[:-1] + edges[1:]) / 2
    bars = [
        go.Bar(
            x=centers,
            y=counts[code],
            width=edges[1] - edges[0],
            name=class_name(code),
            marker={"color": CLASS_COLORS[code], "line": {"width": 0}},
        )
        for code in (NORMAL, REVIEW, ANOMALOUS)
        if code != REVIEW or show_review
    ]
    # Lines and their labels are written as layout shapes and annotations
    # directly: Figure.add_vline does the same but took about 10 ms a line.
    shapes = [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": line.x,
            "x1": line.x,
            "y0": 0,
            "y1": 1,
            "line": {"color": line.color, "dash": line.dash, "width": 2},
        }
        for line in lines
    ]
    # A label beside a line in the right half is written to its left, so that
    # it stays inside the plot.
    middle = (edges[0] + edges[-1]) / 2
    annotations = [
        {
            "text": line.text,
            "x": line.x,
            "xref": "x",
            "y": 1,
            "yref": "paper",
            "xanchor": "right" if line.x > middle else "left",
            "yanchor": "top",
            "yshift": -14 * position,
            "showarrow": False,
        }
        for position, line in enumerate(lines)
    ]
    layout = {
        "title": {"text": title, "font": {"size": 15}},
        "barmode": "stack",
        "bargap": 0,
        "height": 330,
        "margin": {"t": 40, "b": 100, "l": 50, "r": 20},
        # Below the axis title, because above the plot a legend that wraps in a
        # narrow column covers the title. Stacked bars list their legend
        # bottom-up by default, so the class order is set.
        "legend": {
            "orientation": "h",
            "y": -0.3,
            "yanchor": "top",
            "x": 0,
            "traceorder": "normal",
        },
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": t("common.chart.image_count")}},
        "shapes": shapes,
        "annotations": annotations,
    }
    return go.Figure(data=bars, layout=layout)


def agreement_frame(result: Agreement) -> pd.DataFrame:
    """Tabulate the confusion matrix: one row per human label, one column per auto label."""
    normal, anomalous = t("common.label.normal"), t("common.label.anomalous")
    matrix = result.matrix
    return pd.DataFrame(
        {
            t("review.agreement_human"): [normal, anomalous],
            t("review.agreement_auto", label=normal): [int(matrix[0][0]), int(matrix[1][0])],
            t("review.agreement_auto", label=anomalous): [int(matrix[0][1]), int(matrix[1][1])],
        }
    )


def rate_text(value: float) -> str:
    return t("common.none") if np.isnan(value) else f"{value:.1%}"
