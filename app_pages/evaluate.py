"""The Evaluate page: run the comparative study on a dataset folder, or open an earlier one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from davae.errors import DavaeError
from davae.study_figures import ablation_figure, imbalance_figure, roc_pr_figure
from davae.study_report import METRIC_COLUMNS, StudyResult, load_study
from davae.worker_io import STUDIES_DIR, compare_job_params, new_study_dir
from storage import jobs
from storage.models import Job, JobKind, JobStatus
from ui import charts, uploads
from ui.context import get_storage, page_header, reviewer
from ui.i18n import show_error, t
from ui.jobs import cancel_button, is_active, latest_job, progress_fraction, show_job, show_outcome

OPENED_KEY = "evaluate_study"
TABLE_METRICS = METRIC_COLUMNS


def is_study_job(job: Job) -> bool:
    return (job.params or {}).get("mode") == "compare"


def run_form() -> None:
    """Draw the study settings and start a comparison job."""
    dataset = uploads.folder_input("evaluate.dataset", "evaluate_dataset")
    left, middle, right = st.columns(3)
    quick = left.checkbox(
        t("evaluate.quick"),
        True,
        key="evaluate_quick",
        help=t("evaluate.quick_help"),
        persist_state="session",
    )
    epochs = middle.number_input(
        t("evaluate.epochs"),
        0,
        10_000,
        0,
        key="evaluate_epochs",
        help=t("evaluate.epochs_help"),
        persist_state="session",
    )
    seeds = right.number_input(
        t("evaluate.seeds"),
        1,
        100,
        5,
        key="evaluate_seeds",
        help=t("evaluate.seeds_help"),
        persist_state="session",
    )
    ablation = left.checkbox(
        t("evaluate.ablation"),
        True,
        key="evaluate_ablation",
        help=t("evaluate.ablation_help"),
        persist_state="session",
    )
    imbalance = middle.checkbox(
        t("evaluate.imbalance"),
        True,
        key="evaluate_imbalance",
        help=t("evaluate.imbalance_help"),
        persist_state="session",
    )
    labelled = right.number_input(
        t("evaluate.labelled"),
        1,
        1000,
        10,
        key="evaluate_labelled",
        help=t("evaluate.labelled_help"),
        persist_state="session",
    )
    name = reviewer()
    if not name:
        st.warning(t("common.reviewer_required"), icon=":material/person:")
    if not st.button(
        t("evaluate.start"),
        type="primary",
        icon=":material/play_arrow:",
        key="evaluate_start",
        disabled=not (name and dataset),
    ):
        return
    settings = {
        "quick": quick,
        "epochs": int(epochs) or None,
        "seeds": int(seeds),
        "ablation": ablation,
        "imbalance": imbalance,
        "labelled_defects": int(labelled),
    }
    try:
        path = uploads.check_server_path(dataset)
        out_dir = new_study_dir(path.name)
        params = compare_job_params(str(path), out_dir, settings=settings)
        get_storage().database.run_write(
            lambda session: jobs.enqueue_job(session, JobKind.EVALUATE, params, name),
            action="start a comparative study",
        )
    except DavaeError as error:
        show_error(error)
        return
    st.rerun()


def render_job(job: Job) -> None:
    st.subheader(t("evaluate.run_title", job_id=job.id))
    if is_active(job):
        progress = job.progress or {}
        text = (
            t("common.job_queued")
            if job.status == JobStatus.QUEUED
            else t(
                "evaluate.progress", step=progress.get("done", 0), total=progress.get("total", 0)
            )
        )
        st.progress(progress_fraction(job), text=text)
        cancel_button(job, key=f"evaluate_cancel_{job.id}")
        return
    show_outcome(job)
    if job.status == JobStatus.DONE and (job.result or {}).get("study_dir"):
        st.success(t("evaluate.done"), icon=":material/check_circle:")
        if st.button(t("evaluate.open_result"), key=f"evaluate_open_{job.id}"):
            st.session_state[OPENED_KEY] = job.result["study_dir"]
            st.rerun()


def study_folders() -> list[str]:
    """Return the study folders under DAVAE_HOME/studies, newest first, relative to DAVAE_HOME."""
    root = get_storage().files.resolve(STUDIES_DIR)
    if not root.is_dir():
        return []
    found = [path for path in root.iterdir() if (path / "results.csv").is_file()]
    found.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    return [f"{STUDIES_DIR}/{path.name}" for path in found]


@st.cache_data(show_spinner=False, max_entries=8)
def read_study(path: str, modified: float) -> StudyResult:
    # ``modified`` is part of the cache key, so a rerun study is read again.
    return load_study(path)


def results_table(result: StudyResult) -> pd.DataFrame:
    main = result.rows("main")
    rows = []
    for _, row in main.iterrows():
        entry = {t("evaluate.column.method"): charts.method_label(row["method"])}
        entry.update({charts.metric_label(key): row[key] for key in TABLE_METRICS})
        entry[t("evaluate.column.train_seconds")] = row["train_seconds"]
        rows.append(entry)
    return pd.DataFrame(rows)


def show_study(relative: str) -> None:
    """Draw a study's results table and figures, with translated labels."""
    path = get_storage().files.resolve(relative)
    results = path / "results.csv"
    modified = results.stat().st_mtime if results.is_file() else 0.0
    try:
        result = read_study(str(path), modified)
    except DavaeError as error:
        show_error(error)
        return
    info = result.info
    st.caption(
        t(
            "evaluate.study_caption",
            dataset=info.get("dataset", ""),
            started=str(info.get("started_at", ""))[:19].replace("T", " "),
        )
    )
    if (info.get("settings") or {}).get("quick"):
        st.warning(t("evaluate.quick_banner"), icon=":material/speed:")
    st.dataframe(results_table(result), hide_index=True)
    dataset_name = Path(str(info.get("dataset", ""))).name
    figure = charts.localize_roc_pr(roc_pr_figure(result), result.rows("main"), dataset_name)
    st.plotly_chart(figure, key="evaluate_chart_roc_pr")
    if not result.rows("ablation_transforms").empty:
        st.plotly_chart(
            charts.localize_ablation(ablation_figure(result)), key="evaluate_chart_ablation"
        )
    if not result.rows("imbalance").empty:
        st.plotly_chart(
            charts.localize_imbalance(imbalance_figure(result)), key="evaluate_chart_imbalance"
        )


def open_section() -> None:
    st.subheader(t("evaluate.section_open"))
    folders = study_folders()
    opened = st.session_state.get(OPENED_KEY)
    if not folders and not opened:
        st.info(t("evaluate.no_studies"))
        return
    options = folders if opened in folders or opened is None else [opened, *folders]
    if opened is None:
        st.session_state[OPENED_KEY] = options[0]
    chosen = st.selectbox(
        t("evaluate.study"), options, format_func=lambda value: Path(value).name, key=OPENED_KEY
    )
    show_study(chosen)


page_header("evaluate")
st.subheader(t("evaluate.section_run"))
study_job = latest_job([JobKind.EVALUATE], accept=is_study_job)
if study_job is not None and is_active(study_job):
    show_job(study_job, render_job)
else:
    run_form()
    if study_job is not None:
        render_job(study_job)
st.divider()
open_section()
