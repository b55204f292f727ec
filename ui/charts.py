"""Plotly figures of the Train, Models and Evaluate pages, with translated titles and axes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.i18n import has_key, t

TRAIN_COLOR = "#1f5f8b"
VALIDATION_COLOR = "#d1495b"
THRESHOLD_COLOR = "#d1495b"


def loss_chart(history: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Plot the training and validation loss (negative ELBO) per epoch."""
    epochs = [entry["epoch"] for entry in history]
    figure = go.Figure()
    for key, name, color in (
        ("train_loss", t("common.chart.train_loss"), TRAIN_COLOR),
        ("val_loss", t("common.chart.val_loss"), VALIDATION_COLOR),
    ):
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=[entry.get(key) for entry in history],
                mode="lines+markers",
                name=name,
                line={"color": color},
            )
        )
    figure.update_layout(
        title=t("common.chart.loss_title"),
        xaxis_title=t("common.chart.epoch"),
        yaxis_title=t("common.chart.loss"),
        height=320,
        margin={"t": 50, "b": 40},
    )
    return figure


def calibration_chart(
    calibration: Mapping[str, Sequence[float]], thresholds: Mapping[str, Any]
) -> go.Figure:
    """Plot the held-out normal images' two scores with the calibrated thresholds."""
    recon_name = f"recon_{thresholds.get('recon_reduction', 'max')}"
    latent_name = f"latent_{thresholds.get('latent_metric', 'mahalanobis')}"
    panels = (
        (recon_name, thresholds.get("recon"), t("common.chart.recon_score")),
        (latent_name, thresholds.get("latent"), t("common.chart.latent_distance")),
    )
    figure = make_subplots(rows=1, cols=2, subplot_titles=[title for _, _, title in panels])
    for column, (name, threshold, title) in enumerate(panels, start=1):
        figure.add_trace(
            go.Histogram(
                x=list(calibration.get(name, [])),
                name=title,
                marker_color=TRAIN_COLOR,
                showlegend=False,
            ),
            row=1,
            col=column,
        )
        if threshold is not None:
            figure.add_vline(
                x=threshold,
                line={"color": THRESHOLD_COLOR, "dash": "dash"},
                annotation_text=t("common.chart.threshold"),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text=title, row=1, col=column)
        figure.update_yaxes(title_text=t("common.chart.image_count"), row=1, col=column)
    figure.update_layout(title=t("common.chart.calibration_title"), height=340)
    return figure


def method_label(method: str) -> str:
    """Return a study method's display name, or the method itself when it has none."""
    key = f"evaluate.method.{method}"
    return t(key) if has_key(key) else method


def metric_label(metric: str) -> str:
    """Return a detection metric's display name, such as AUROC or recall."""
    key = f"common.score_metric.{metric}"
    return t(key) if has_key(key) else metric


def augment_label(augment: str) -> str:
    key = f"evaluate.augment.{augment}"
    return t(key) if has_key(key) else augment


def _set_subplot_titles(figure: go.Figure, titles: Sequence[str]) -> None:
    for annotation, title in zip(figure.layout.annotations, titles, strict=False):
        annotation.text = title


def localize_roc_pr(figure: go.Figure, main_rows: Any, dataset: str) -> go.Figure:
    """Translate ``davae.study_figures.roc_pr_figure``: titles, axes and legend entries."""
    metrics = main_rows.set_index("method")
    for trace in figure.data:
        method = trace.legendgroup
        if method in metrics.index:
            auroc = metrics.loc[method, "image_auroc"]
            trace.name = f"{method_label(method)} (AUROC {auroc:.3f})"
        elif trace.name == "chance":
            trace.name = t("evaluate.chart.chance")
    _set_subplot_titles(figure, (t("evaluate.chart.roc"), t("evaluate.chart.pr")))
    figure.update_xaxes(title_text=t("evaluate.chart.fpr"), row=1, col=1)
    figure.update_yaxes(title_text=t("evaluate.chart.tpr"), row=1, col=1)
    figure.update_xaxes(title_text=t("evaluate.chart.recall"), row=1, col=2)
    figure.update_yaxes(title_text=t("evaluate.chart.precision"), row=1, col=2)
    figure.update_layout(title=t("evaluate.chart.roc_pr_title", dataset=dataset))
    return figure


def localize_ablation(figure: go.Figure) -> go.Figure:
    """Translate ``davae.study_figures.ablation_figure``."""
    for trace in figure.data:
        trace.name = metric_label(trace.legendgroup or trace.name)
        if isinstance(trace, go.Bar):
            trace.x = [augment_label(str(value)) for value in trace.x]
    _set_subplot_titles(figure, (t("evaluate.chart.transforms"), t("evaluate.chart.iterations")))
    figure.update_xaxes(title_text=t("evaluate.chart.augmentation"), row=1, col=1)
    figure.update_xaxes(title_text=t("evaluate.chart.copies"), row=1, col=2)
    figure.update_layout(title=t("evaluate.chart.ablation_title"))
    return figure


def localize_imbalance(figure: go.Figure) -> go.Figure:
    """Translate ``davae.study_figures.imbalance_figure``."""
    for trace in figure.data:
        trace.name = method_label(trace.legendgroup or trace.name)
    _set_subplot_titles(figure, ("AUPR", t("evaluate.chart.f1_calibrated")))
    figure.update_xaxes(title_text=t("evaluate.chart.defect_share"))
    figure.update_layout(title=t("evaluate.chart.imbalance_title"))
    return figure
