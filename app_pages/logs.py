"""The Logs page: the audit log filtered by batch, reviewer and action, and the batch history."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from storage import audit, batches, registry
from storage.audit import AuditAction
from storage.models import AuditEntry, Batch
from ui.context import format_time, get_storage, page_header
from ui.i18n import enum_text, option_labels, t

ALL = "__all__"
PAGE_SIZE = 100
OLDER_KEY = "logs_before_ids"  # stack of page starts, so "newer" can step back


def action_text(action: str) -> str:
    return enum_text("logs.action", action)


def filters(recent: list[Batch], actors: list[str]) -> tuple[int | None, str | None, str | None]:
    """Draw the three filters; return the batch id, reviewer and action chosen (None for all)."""
    names = {batch.id: batch.name for batch in recent}
    left, middle, right = st.columns(3)
    batch_options = [ALL, *names]
    batch = left.selectbox(
        t("logs.filter_batch"),
        batch_options,
        format_func=option_labels(
            batch_options,
            lambda value: (
                t("logs.all")
                if value == ALL
                else t("score.batch_option", batch_id=value, name=names[value])
            ),
        ),
        key="logs_batch",
        persist_state="session",
        on_change=reset_paging,
    )
    actor_options = [ALL, *actors]
    actor = middle.selectbox(
        t("logs.filter_reviewer"),
        actor_options,
        format_func=option_labels(
            actor_options, lambda value: t("logs.all") if value == ALL else value
        ),
        key="logs_actor",
        persist_state="session",
        on_change=reset_paging,
    )
    action_options = [ALL, *[action.value for action in AuditAction]]
    action = right.selectbox(
        t("logs.filter_action"),
        action_options,
        format_func=option_labels(
            action_options, lambda value: t("logs.all") if value == ALL else action_text(value)
        ),
        key="logs_action",
        persist_state="session",
        on_change=reset_paging,
    )
    return (
        None if batch == ALL else int(batch),
        None if actor == ALL else actor,
        None if action == ALL else action,
    )


def reset_paging() -> None:
    st.session_state[OLDER_KEY] = []


def entries_frame(entries: list[AuditEntry]) -> pd.DataFrame:
    rows = [
        {
            t("logs.column.time"): format_time(entry.created_at),
            t("logs.column.actor"): entry.actor,
            t("logs.column.action"): action_text(entry.action),
            t("logs.column.entity"): t(
                "logs.entity",
                kind=enum_text("logs.entity_type", entry.entity_type),
                entity_id=entry.entity_id if entry.entity_id is not None else "",
            ),
            t("logs.column.batch"): entry.batch_id,
            t("logs.column.details"): json.dumps(entry.details, ensure_ascii=False, default=str),
        }
        for entry in entries
    ]
    columns = [
        t(f"logs.column.{name}")
        for name in ("time", "actor", "action", "entity", "batch", "details")
    ]
    return pd.DataFrame(rows, columns=columns)


def audit_section(recent: list[Batch]) -> None:
    st.subheader(t("logs.section_audit"))
    storage = get_storage()
    with storage.database.read() as session:
        actors = audit.list_actors(session)
    batch_id, actor, action = filters(recent, actors)
    if OLDER_KEY not in st.session_state:
        st.session_state[OLDER_KEY] = []
    pages = st.session_state[OLDER_KEY]
    before_id = pages[-1] if pages else None
    with storage.database.read() as session:
        entries = audit.list_entries(
            session,
            batch_id=batch_id,
            actor=actor,
            action=action,
            before_id=before_id,
            limit=PAGE_SIZE,
        )
    if not entries:
        st.info(t("logs.no_entries"))
    else:
        st.dataframe(entries_frame(entries), hide_index=True)
        st.caption(t("logs.shown", count=len(entries), page=len(pages) + 1))
    newer, older = st.columns(2)
    if newer.button(t("logs.newer"), key="logs_newer", disabled=not pages):
        pages.pop()
        st.rerun()
    if older.button(t("logs.older"), key="logs_older", disabled=len(entries) < PAGE_SIZE):
        pages.append(min(entry.id for entry in entries))
        st.rerun()


def history_section(recent: list[Batch]) -> None:
    st.subheader(t("logs.section_batches"))
    if not recent:
        st.info(t("logs.no_batches"))
        return
    with get_storage().database.read() as session:
        models = {model.id: model for model in registry.list_model_versions(session)}
    rows = []
    for batch in recent:
        model = models.get(batch.model_version_id)
        rows.append(
            {
                t("score.column.id"): batch.id,
                t("score.column.name"): batch.name,
                t("score.column.model"): t(
                    "score.model_option", name=model.name, version=model.version
                )
                if model
                else batch.model_version_id,
                t("score.column.created_at"): format_time(batch.created_at),
                t("score.column.created_by"): batch.created_by,
                t("score.column.status"): enum_text("common.batch_status", batch.status),
                t("logs.column.finished_at"): format_time(batch.finished_at),
                t("score.column.images"): batch.image_count,
                t("score.column.scored"): batch.scored_count,
                t("score.column.rejected"): batch.rejected_count,
                t("score.column.anomalous"): batch.anomaly_count,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True)


page_header("logs")
with get_storage().database.read() as session:
    recent_batches = batches.list_batches(session, limit=500)
audit_section(recent_batches)
st.divider()
history_section(recent_batches)
