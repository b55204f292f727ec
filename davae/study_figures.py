"""Plotly figures of a comparative study: ROC and PR curves, ablations, imbalance.

Each ``*_figure`` function builds a figure from a :class:`StudyResult`, so a
page can show it with ``st.plotly_chart`` whether the study has just run or
was loaded from disk. :func:`write_figures` saves them as HTML that loads
``plotly.min.js`` from its own folder, because plant networks are often
offline and a CDN link would leave the pages blank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from sklearn.metrics import precision_recall_curve, roc_curve

from davae.study_plan import METHODS

if TYPE_CHECKING:
    from davae.study_report import StudyResult

_ABLATION_METRICS = ("image_auroc", "aupr", "f1", "recall")


def roc_pr_figure(result: StudyResult) -> go.Figure:
    """Build the ROC and precision-recall curves of every method of the main comparison."""
    scores = result.scores
    labels = scores["label"].to_numpy()
    main = result.rows("main").set_index("method")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "Precision-recall"))
    for number, method in enumerate(m for m in METHODS if m in scores.columns):
        values = scores[method].to_numpy()
        fpr, tpr, _ = roc_curve(labels, values)
        precision, recall, _ = precision_recall_curve(labels, values)
        auroc, aupr = main.loc[method, "image_auroc"], main.loc[method, "aupr"]
        color = _color(number)

        figure.add_trace(
            go.Scatter(
                x=fpr,
                y=tpr,
                mode="lines",
                name=f"{method} (AUROC {auroc:.3f})",
                legendgroup=method,
                line={"color": color},
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=recall,
                y=precision,
                mode="lines",
                name=f"{method} (AUPR {aupr:.3f})",
                legendgroup=method,
                showlegend=False,
                line={"color": color},
            ),
            row=1,
            col=2,
        )

    figure.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line={"dash": "dot", "color": "gray"},
        ),
        row=1,
        col=1,
    )

    figure.update_xaxes(title_text="false-positive rate", range=[0, 1], row=1, col=1)
    figure.update_yaxes(title_text="true-positive rate (recall)", range=[0, 1.02], row=1, col=1)
    figure.update_xaxes(title_text="recall", range=[0, 1], row=1, col=2)
    figure.update_yaxes(title_text="precision", range=[0, 1.02], row=1, col=2)
    figure.update_layout(title=f"Main comparison: {result.info['dataset']}", height=500)
    return figure


def ablation_figure(result: StudyResult) -> go.Figure:
    """Build bar charts of the transform ablation and lines over the augmentation iterations K."""
    transforms = result.rows("ablation_transforms")
    iterations = result.rows("ablation_iterations").sort_values("iterations")
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Transforms", "Augmentation iterations K (all transforms)"),
        column_widths=[0.6, 0.4],
    )
    for number, metric in enumerate(_ABLATION_METRICS):
        color = _color(number)
        figure.add_trace(
            go.Bar(
                x=transforms["augment"],
                y=transforms[metric],
                name=metric,
                legendgroup=metric,
                marker_color=color,
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=iterations["iterations"],
                y=iterations[metric],
                mode="lines+markers",
                name=metric,
                legendgroup=metric,
                showlegend=False,
                line={"color": color},
            ),
            row=1,
            col=2,
        )
    figure.update_yaxes(range=[0, 1.02])
    figure.update_xaxes(title_text="augmentation", row=1, col=1)
    figure.update_xaxes(title_text="copies per image and epoch", row=1, col=2)
    figure.update_layout(barmode="group", title="DA-VAE augmentation ablation", height=500)
    return figure


def imbalance_figure(result: StudyResult) -> go.Figure:
    """Plot AUPR and F1 against the defect share: means with standard-deviation error bars."""
    imbalance = result.rows("imbalance")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("AUPR", "F1 at calibrated threshold"))
    for number, method in enumerate(m for m in METHODS if m in set(imbalance["method"])):
        rows = imbalance[imbalance["method"] == method].sort_values("defect_share")
        for col, metric in enumerate(("aupr", "f1"), start=1):
            figure.add_trace(
                go.Scatter(
                    x=rows["defect_share"],
                    y=rows[metric],
                    error_y={"type": "data", "array": rows[f"{metric}_std"].fillna(0.0)},
                    mode="lines+markers",
                    name=method,
                    legendgroup=method,
                    showlegend=col == 1,
                    line={"color": _color(number)},
                ),
                row=1,
                col=col,
            )
    figure.update_xaxes(type="log", title_text="defect share of the test set")
    figure.update_yaxes(range=[0, 1.02])
    figure.update_layout(title="Imbalance: defects subsampled", height=500)
    return figure


def write_figures(result: StudyResult) -> None:
    """Write the HTML figures that have data; each loads ``plotly.min.js`` from its folder."""
    figures = {"roc_pr": roc_pr_figure(result)}
    if not result.rows("ablation_transforms").empty:
        figures["ablation"] = ablation_figure(result)
    if not result.rows("imbalance").empty:
        figures["imbalance"] = imbalance_figure(result)
    for name in ("ablation", "imbalance"):
        if name not in figures:
            # A figure left from an earlier run into this folder would show stale rows.
            result.path(name).unlink(missing_ok=True)
    for name, figure in figures.items():
        # "directory" writes plotly.min.js beside the HTML and links it by a relative path.
        figure.write_html(result.path(name), include_plotlyjs="directory", full_html=True)


def _color(number: int) -> str:
    palette = qualitative.Plotly
    return palette[number % len(palette)]
