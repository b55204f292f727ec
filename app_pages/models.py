"""The Models page: the registry, one model's settings, thresholds, curves and metrics."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from davae.config import DetectorConfig
from davae.errors import DavaeError
from davae.worker_io import model_evaluation_params
from storage import jobs, registry
from storage.models import Job, JobKind, JobStatus, ModelVersion
from ui import charts, uploads
from ui.context import format_time, get_storage, load_detector, page_header, reviewer
from ui.i18n import enum_text, option_labels, show_error, t
from ui.jobs import cancel_button, is_active, latest_job, progress_fraction, show_job, show_outcome

SELECTED_KEY = "models_selected"
SCORE_NAMES = (
    "combined",
    "recon_max",
    "recon_mean",
    "latent_mahalanobis",
    "latent_euclidean",
    "latent_multiscale",
)
METRICS = ("image_auroc", "aupr", "precision", "recall", "f1", "fpr", "recall_at_fpr_5")


def registry_table(models: list[ModelVersion]) -> None:
    rows = []
    for model in models:
        combined = ((model.metrics or {}).get("combined") or {}).get("image_auroc")
        rows.append(
            {
                t("models.column.id"): model.id,
                t("models.column.name"): model.name,
                t("models.column.version"): model.version,
                t("models.column.default"): t("common.yes") if model.is_default else "",
                t("models.column.created_at"): format_time(model.created_at),
                t("models.column.created_by"): model.created_by,
                t("models.column.recon"): model.thresholds.get("recon"),
                t("models.column.latent"): model.thresholds.get("latent"),
                "AUROC": combined,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def settings_rows(config: DetectorConfig, epochs_run: int | None) -> pd.DataFrame:
    """Summarise the settings a user chooses on the Train page, with translated names."""
    transforms = [t(f"train.transform.{name}") for name in config.augment.enabled_transforms]
    values: list[tuple[str, Any]] = [
        ("image_size", f"{config.vae.image_size} px"),
        ("mode", t(f"train.mode_{config.train.mode}")),
    ]
    if config.train.mode == "patch":
        values.append(("patch_scale", f"{config.train.patch_scale:g}"))
    values += [
        ("channels", t(f"train.channels_{config.vae.channels}")),
        ("latent_dim", config.vae.latent_dim),
        ("width", config.vae.width),
        ("epochs", config.train.epochs),
        ("epochs_run", epochs_run if epochs_run is not None else t("common.none")),
        ("iterations", config.augment.iterations),
        ("transforms", ", ".join(transforms) or t("common.none")),
        ("normalize", t(f"train.normalize_{config.preprocess.normalize}")),
        ("recon_reduction", enum_text("common.reduction", config.scoring.recon_reduction)),
        (
            "error_normalization",
            t(f"train.error_normalization_{config.scoring.error_normalization}"),
        ),
        ("latent_metric", enum_text("common.metric", config.scoring.latent_metric)),
        ("target_fpr", f"{config.scoring.target_fpr * 100:g} %"),
    ]
    return pd.DataFrame(
        [
            {
                t("models.column.setting"): t(f"models.setting.{name}"),
                t("models.column.value"): str(v),
            }
            for name, v in values
        ]
    )


def metrics_frame(entries: dict[str, dict[str, Any]], label: Any) -> pd.DataFrame:
    rows = []
    for name, metrics in entries.items():
        row = {t("models.column.score"): label(name)}
        row.update({charts.metric_label(key): metrics.get(key) for key in METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def score_label(name: str) -> str:
    return t(f"common.score_name.{name}")


def show_metrics(metrics: dict[str, Any]) -> None:
    """Draw a model's stored evaluation: counts, each score's metrics, each defect class."""
    counts = metrics.get("counts", {})
    st.caption(
        t(
            "models.evaluated_on",
            dataset=metrics.get("dataset", ""),
            time=metrics.get("evaluated_at", "")[:19].replace("T", " "),
            good=counts.get("test_good", 0),
            anomalous=counts.get("test_anomalous", 0),
        )
    )
    scores = {"combined": metrics.get("combined", {})}
    scores.update({name: metrics.get("scores", {}).get(name, {}) for name in SCORE_NAMES[1:]})
    st.dataframe(metrics_frame(scores, score_label), hide_index=True)
    per_class = {
        defect: entry.get("combined", {}) for defect, entry in metrics.get("per_class", {}).items()
    }
    if per_class:
        st.markdown(t("models.per_class"))
        st.dataframe(metrics_frame(per_class, str), hide_index=True)
    pixel = metrics.get("pixel_auroc")
    if pixel is not None:
        st.metric(t("models.pixel_auroc"), f"{pixel:.3f}")


def render_evaluation_job(job: Job) -> None:
    if is_active(job):
        progress = job.progress or {}
        st.progress(
            progress_fraction(job),
            text=t(
                "models.evaluating", done=progress.get("done", 0), total=progress.get("total", 0)
            ),
        )
        cancel_button(job, key=f"models_cancel_{job.id}")
    else:
        show_outcome(job)


def evaluation_section(model: ModelVersion) -> None:
    st.subheader(t("models.section_metrics"))
    if model.metrics:
        show_metrics(model.metrics)
    else:
        st.info(t("models.no_metrics"))
    job = latest_job(
        [JobKind.EVALUATE],
        accept=lambda job: (
            (job.params or {}).get("mode") == "model"
            and (job.params or {}).get("model_version_id") == model.id
        ),
    )
    if job is not None and (is_active(job) or job.status != JobStatus.DONE):
        show_job(job, render_evaluation_job)
    if job is not None and is_active(job):
        return
    dataset = uploads.folder_input("models.dataset", f"models_dataset_{model.id}")
    name = reviewer()
    if st.button(
        t("models.evaluate"),
        key=f"models_evaluate_{model.id}",
        icon=":material/analytics:",
        disabled=not (name and dataset),
        help=None if name else t("common.reviewer_required"),
    ):
        try:
            path = uploads.check_server_path(dataset)
            params = model_evaluation_params(str(path), model.id)
            get_storage().database.run_write(
                lambda session: jobs.enqueue_job(
                    session, JobKind.EVALUATE, params, name, model_version_id=model.id
                ),
                action=f"evaluate model version {model.id}",
            )
        except DavaeError as error:
            show_error(error)
            return
        st.rerun()


def set_default_button(model: ModelVersion) -> None:
    if model.is_default:
        st.caption(t("models.is_default"))
        return
    name = reviewer()
    if st.button(
        t("models.set_default"),
        key=f"models_default_{model.id}",
        icon=":material/star:",
        disabled=not name,
        help=None if name else t("common.reviewer_required"),
    ):
        try:
            get_storage().database.run_write(
                lambda session: registry.set_default_model_version(session, model.id, name),
                action=f"make model version {model.id} the default",
            )
        except DavaeError as error:
            show_error(error)
            return
        st.rerun()


def model_details(model: ModelVersion) -> None:
    st.header(t("models.detail_title", name=model.name, version=model.version))
    st.caption(
        t(
            "models.detail_caption",
            created_by=model.created_by,
            created_at=format_time(model.created_at),
            sha=model.bundle_sha256[:12],
        )
    )
    set_default_button(model)

    thresholds = model.thresholds
    columns = st.columns(3)
    reduction = enum_text("common.reduction", thresholds["recon_reduction"])
    metric = enum_text("common.metric", thresholds["latent_metric"])
    columns[0].metric(
        t("common.recon_threshold", reduction=reduction), f"{thresholds['recon']:.4g}"
    )
    columns[1].metric(t("common.latent_threshold", metric=metric), f"{thresholds['latent']:.4g}")
    if thresholds.get("target_fpr") is not None:
        columns[2].metric(t("common.target_fpr"), f"{thresholds['target_fpr'] * 100:g} %")

    try:
        detector = load_detector(model)
    except DavaeError as error:
        show_error(error)
        detector = None
    config = DetectorConfig.from_dict(model.config)
    st.subheader(t("models.section_settings"))
    epochs_run = len(detector.history) if detector is not None else None
    st.dataframe(settings_rows(config, epochs_run), hide_index=True)
    with st.expander(t("models.full_config")):
        st.json(model.config)

    if detector is not None:
        st.subheader(t("models.section_training"))
        if detector.history:
            st.plotly_chart(charts.loss_chart(detector.history), key="models_loss")
        calibration = {name: values.tolist() for name, values in detector.calibration.items()}
        st.plotly_chart(charts.calibration_chart(calibration, thresholds), key="models_calibration")
    evaluation_section(model)


page_header("models")
with get_storage().database.read() as session:
    model_list = registry.list_model_versions(session)
if not model_list:
    st.info(t("score.no_models"), icon=":material/info:")
    st.page_link("app_pages/train.py", label=t("score.go_train"), icon=":material/model_training:")
    st.stop()

registry_table(model_list)
by_id = {model.id: model for model in model_list}
if st.session_state.get(SELECTED_KEY) not in by_id:
    st.session_state[SELECTED_KEY] = next(
        (model.id for model in model_list if model.is_default), model_list[0].id
    )
selected = st.selectbox(
    t("models.selected"),
    list(by_id),
    format_func=option_labels(
        by_id,
        lambda mid: t("score.model_option", name=by_id[mid].name, version=by_id[mid].version),
    ),
    key=SELECTED_KEY,
)
model_details(by_id[selected])
