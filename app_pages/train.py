"""The Train page: normal images and settings in, a training job out, its progress and result."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from davae.config import DetectorConfig
from davae.errors import DavaeError
from davae.worker_io import train_job_params
from storage import jobs
from storage.models import Job, JobKind, JobStatus
from ui import charts, uploads
from ui.context import get_storage, page_header, reviewer
from ui.i18n import enum_text, option_labels, show_error, t
from ui.jobs import (
    cancel_button,
    is_active,
    latest_job,
    load_job,
    progress_fraction,
    show_job,
    show_outcome,
)

JOB_KEY = "train_job_id"
IMAGE_SIZES = (32, 64, 128, 256, 512)
LATENT_METRICS = ("mahalanobis", "euclidean", "multiscale")
ERROR_NORMALIZATIONS = ("none", "pixel")
TRANSFORMS = (
    # (switch, strength field, slider maximum, step)
    ("rotate90", "rotate90_p", 1.0, 0.05),
    ("hflip", "hflip_p", 1.0, 0.05),
    ("vflip", "vflip_p", 1.0, 0.05),
    ("brightness", "brightness_strength", 0.9, 0.05),
    ("contrast", "contrast_strength", 0.9, 0.05),
    ("noise", "noise_sigma", 0.5, 0.005),
)
DEFAULTS = DetectorConfig()


def data_inputs() -> tuple[str, list, str]:
    """Draw the image source widgets; return the source, the uploaded files and the folder."""
    st.subheader(t("train.section_data"))
    source = uploads.source_selector("train_source")
    if source == uploads.SOURCE_UPLOAD:
        return source, uploads.file_uploader("train.upload_label", "train_files"), ""
    return source, [], uploads.folder_input("train.folder_label", "train_folder")


def model_settings() -> dict[str, Any]:
    """Draw the model, training and augmentation settings; return them as config overrides."""
    st.subheader(t("train.section_settings"))
    left, middle, right = st.columns(3)
    overrides: dict[str, Any] = {}
    overrides["train__epochs"] = left.number_input(
        t("train.epochs"),
        1,
        10_000,
        DEFAULTS.train.epochs,
        key="train_epochs",
        help=t("train.epochs_help"),
        persist_state="session",
    )
    overrides["vae__image_size"] = middle.selectbox(
        t("train.image_size"),
        IMAGE_SIZES,
        index=IMAGE_SIZES.index(DEFAULTS.vae.image_size),
        key="train_image_size",
        help=t("train.image_size_help"),
        persist_state="session",
    )
    mode = right.radio(
        t("train.mode"),
        ("whole", "patch"),
        index=("whole", "patch").index(DEFAULTS.train.mode),
        format_func=option_labels(("whole", "patch"), lambda value: t(f"train.mode_{value}")),
        key="train_mode",
        help=t("train.mode_help"),
        persist_state="session",
    )
    overrides["train__mode"] = mode
    if mode == "patch":
        overrides["train__patch_scale"] = right.slider(
            t("train.patch_scale"),
            0.1,
            2.0,
            DEFAULTS.train.patch_scale,
            0.05,
            key="train_patch_scale",
            help=t("train.patch_scale_help"),
            persist_state="session",
        )

    with st.expander(t("train.section_augment"), expanded=True):
        overrides["augment__iterations"] = st.slider(
            t("train.iterations"),
            0,
            16,
            DEFAULTS.augment.iterations,
            key="train_iterations",
            help=t("train.iterations_help"),
            persist_state="session",
        )
        for name, strength, maximum, step in TRANSFORMS:
            switch, slider = st.columns((1, 2), vertical_alignment="center")
            overrides[f"augment__{name}"] = switch.checkbox(
                t(f"train.transform.{name}"),
                getattr(DEFAULTS.augment, name),
                key=f"train_{name}",
                persist_state="session",
            )
            overrides[f"augment__{strength}"] = slider.slider(
                t(f"train.strength.{strength}"),
                0.0,
                maximum,
                float(getattr(DEFAULTS.augment, strength)),
                step,
                key=f"train_{strength}",
                disabled=not overrides[f"augment__{name}"],
                persist_state="session",
            )

    with st.expander(t("train.section_advanced")):
        left, middle, right = st.columns(3)
        overrides["vae__latent_dim"] = left.number_input(
            t("train.latent_dim"),
            2,
            1024,
            DEFAULTS.vae.latent_dim,
            key="train_latent_dim",
            help=t("train.latent_dim_help"),
            persist_state="session",
        )
        overrides["vae__width"] = middle.number_input(
            t("train.width"),
            4,
            256,
            DEFAULTS.vae.width,
            key="train_width",
            help=t("train.width_help"),
            persist_state="session",
        )
        target = right.number_input(
            t("train.target_fpr"),
            0.01,
            50.0,
            DEFAULTS.scoring.target_fpr * 100,
            0.5,
            key="train_target_fpr",
            help=t("train.target_fpr_help"),
            persist_state="session",
        )
        overrides["scoring__target_fpr"] = round(target / 100, 6)
        overrides["vae__channels"] = left.radio(
            t("train.channels"),
            (1, 3),
            index=(1, 3).index(DEFAULTS.vae.channels),
            format_func=option_labels((1, 3), lambda value: t(f"train.channels_{value}")),
            key="train_channels",
            persist_state="session",
        )
        overrides["scoring__latent_metric"] = right.radio(
            t("train.latent_metric"),
            LATENT_METRICS,
            index=LATENT_METRICS.index(DEFAULTS.scoring.latent_metric),
            format_func=option_labels(LATENT_METRICS, lambda value: t(f"common.metric.{value}")),
            key="train_latent_metric",
            help=t("train.latent_metric_help"),
            persist_state="session",
        )
        overrides["scoring__error_normalization"] = left.radio(
            t("train.error_normalization"),
            ERROR_NORMALIZATIONS,
            index=ERROR_NORMALIZATIONS.index(DEFAULTS.scoring.error_normalization),
            format_func=option_labels(
                ERROR_NORMALIZATIONS, lambda value: t(f"train.error_normalization_{value}")
            ),
            key="train_error_normalization",
            help=t("train.error_normalization_help"),
            persist_state="session",
        )
        overrides["preprocess__normalize"] = middle.radio(
            t("train.normalize"),
            ("none", "flatfield"),
            index=("none", "flatfield").index(DEFAULTS.preprocess.normalize),
            format_func=option_labels(
                ("none", "flatfield"), lambda value: t(f"train.normalize_{value}")
            ),
            key="train_normalize",
            help=t("train.normalize_help"),
            persist_state="session",
        )
    return overrides


def start_training(source: str, files: list, folder: str, overrides: dict[str, Any]) -> None:
    """Validate the settings, save the uploads and enqueue the training job."""
    name = st.session_state.get("train_model_name", "").strip()
    storage = get_storage()
    try:
        config = DEFAULTS.replace(**overrides)
        config.validate()
        upload_dir, inputs = uploads.job_inputs(storage, source, files, folder)
        params = train_job_params(
            inputs,
            config.to_dict(),
            name,
            make_default=bool(st.session_state.get("train_make_default")),
            upload_dir=upload_dir,
        )
        job = storage.database.run_write(
            lambda session: jobs.enqueue_job(session, JobKind.TRAIN, params, reviewer()),
            action="enqueue training",
        )
    except DavaeError as error:
        show_error(error)
        return
    st.session_state[JOB_KEY] = job.id
    st.rerun()


def start_form() -> None:
    source, files, folder = data_inputs()
    st.subheader(t("train.section_model"))
    left, right = st.columns((2, 1), vertical_alignment="bottom")
    left.text_input(
        t("train.model_name"),
        "parts",
        key="train_model_name",
        max_chars=200,
        help=t("train.model_name_help"),
        persist_state="session",
    )
    right.checkbox(t("train.make_default"), key="train_make_default", persist_state="session")
    overrides = model_settings()

    has_input = bool(files) if source == uploads.SOURCE_UPLOAD else bool(folder)
    name = reviewer()
    model_name = st.session_state.get("train_model_name", "").strip()
    if not name:
        st.warning(t("common.reviewer_required"), icon=":material/person:")
    elif not has_input:
        st.info(t("train.no_input"), icon=":material/info:")
    clicked = st.button(
        t("train.start"),
        type="primary",
        icon=":material/play_arrow:",
        key="train_start",
        disabled=not (name and has_input and model_name),
    )
    if clicked:
        start_training(source, files, folder, overrides)


def progress_text(job: Job) -> str:
    progress = job.progress or {}
    phase = progress.get("phase")
    if job.status == JobStatus.QUEUED:
        return t("common.job_queued")
    if phase == "loading":
        return t("train.progress_loading", done=progress.get("done", 0))
    if phase == "training":
        text = t("train.progress_epoch", epoch=progress.get("done"), epochs=progress.get("total"))
        eta = progress.get("eta_s")
        if isinstance(eta, int | float) and math.isfinite(eta):
            text += " · " + t("train.progress_eta", minutes=max(1, round(eta / 60)))
        return text
    if phase in ("preparing", "calibrating", "done"):
        return t(f"train.phase.{phase}")
    return t("common.job_running")


def render_job(job: Job) -> None:
    """Draw one training job: progress and loss while it runs, the result when done."""
    st.subheader(t("train.run_title", job_id=job.id))
    progress = job.progress or {}
    result = job.result or {}
    if is_active(job):
        st.progress(progress_fraction(job), text=progress_text(job))
        cancel_button(job, key=f"train_cancel_{job.id}")
    else:
        show_outcome(job)

    files = result if job.status == JobStatus.DONE else progress
    uploads.show_listed_files(
        files.get("rejected", []),
        files.get("ignored", []),
        rejected_count=files.get("rejected_count"),
        ignored_count=files.get("ignored_count"),
    )
    history = result.get("history") or progress.get("history") or []
    if job.status == JobStatus.DONE:
        render_result(result)
    if history:
        st.plotly_chart(charts.loss_chart(history), key=f"train_loss_{job.id}")


def render_result(result: dict[str, Any]) -> None:
    st.success(
        t("train.done", name=result["name"], version=result["version"]),
        icon=":material/check_circle:",
    )
    thresholds = result["thresholds"]
    columns = st.columns(4)
    columns[0].metric(
        t(
            "common.recon_threshold",
            reduction=enum_text("common.reduction", thresholds["recon_reduction"]),
        ),
        f"{thresholds['recon']:.4g}",
    )
    columns[1].metric(
        t(
            "common.latent_threshold",
            metric=enum_text("common.metric", thresholds["latent_metric"]),
        ),
        f"{thresholds['latent']:.4g}",
    )
    columns[2].metric(t("common.target_fpr"), f"{thresholds['target_fpr'] * 100:g} %")
    columns[3].metric(t("train.images_used"), f"{result.get('image_count', 0):,}")
    st.plotly_chart(charts.calibration_chart(result["calibration"], thresholds))
    st.page_link("app_pages/score.py", label=t("train.go_score"), icon=":material/arrow_forward:")


def shown_job() -> Job | None:
    """Return the session's training job, else the newest one (after a refresh or a new tab)."""
    job_id = st.session_state.get(JOB_KEY)
    if job_id is not None:
        return load_job(job_id)
    return latest_job([JobKind.TRAIN])


page_header("train")
job = shown_job()
if job is not None and is_active(job):
    show_job(job, render_job)
else:
    start_form()
    if job is not None:
        st.divider()
        with st.expander(t("train.last_run"), expanded=JOB_KEY in st.session_state):
            render_job(job)
