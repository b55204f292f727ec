"""Histogram figures of the Review page, built without running the app."""

from __future__ import annotations

import numpy as np

from ui.review_charts import Line, histogram_figure
from ui.review_data import NORMAL


def test_line_labels_stay_inside_plot() -> None:
    values = np.linspace(0.0, 10.0, 50)
    classes = np.full(values.shape, NORMAL)
    lines = [Line(1.0, "left line"), Line(9.5, "right line")]

    figure = histogram_figure(values, classes, "title", "score", lines, show_review=False)
    anchors = {item.text: item.xanchor for item in figure.layout.annotations}

    assert anchors["left line"] == "left"
    assert anchors["right line"] == "right"
