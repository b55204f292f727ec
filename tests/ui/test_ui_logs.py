"""The Logs page: audit entries filtered by batch, reviewer and action; batch history."""

from __future__ import annotations

from ui_helpers import REVIEWER

from storage import batches
from storage.db import Storage
from storage.models import ModelVersion
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def make_batches(storage: Storage, model: ModelVersion) -> list[int]:
    ids = []
    for name, actor in (("lot 1", REVIEWER), ("lot 2", "other")):
        batch = storage.database.run_write(
            lambda session, name=name, actor=actor: batches.create_batch(
                session, name=name, model_version_id=model.id, created_by=actor
            ),
            action="create",
        )
        ids.append(batch.id)
    return ids


def test_audit_log_and_filters(
    open_app, storage_handle: Storage, registered_model: ModelVersion
) -> None:
    first, second = make_batches(storage_handle, registered_model)
    at = open_app("logs")
    entries = at.dataframe[0].value
    actions = list(entries[EN["logs.column.action"]])
    assert actions.count(EN["logs.action.batch_create"]) == 2
    assert EN["logs.action.model_register"] in actions

    at.selectbox(key="logs_actor").set_value("other").run()
    entries = at.dataframe[0].value
    assert list(entries[EN["logs.column.actor"]]) == ["other"]
    assert list(entries[EN["logs.column.batch"]]) == [second]

    at.selectbox(key="logs_actor").set_value("__all__")
    at.selectbox(key="logs_batch").set_value(first)
    at.selectbox(key="logs_action").set_value("batch.create").run()
    entries = at.dataframe[0].value
    assert list(entries[EN["logs.column.batch"]]) == [first]

    history = at.dataframe[1].value
    assert list(history[EN["score.column.name"]]) == ["lot 2", "lot 1"]


def test_filters_survive_page_switch(
    open_app, storage_handle: Storage, registered_model: ModelVersion
) -> None:
    make_batches(storage_handle, registered_model)
    at = open_app("logs", language="ko")
    at.selectbox(key="logs_action").set_value("batch.create").run()
    at.switch_page("app_pages/models.py").run()
    at.switch_page("app_pages/logs.py").run()

    assert at.selectbox(key="logs_action").value == "batch.create"
    entries = at.dataframe[0].value
    assert set(entries[KO["logs.column.action"]]) == {KO["logs.action.batch_create"]}


def test_empty_filter_result(open_app, registered_model: ModelVersion) -> None:
    at = open_app("logs")
    at.selectbox(key="logs_action").set_value("export").run()
    assert EN["logs.no_entries"] in [info.value for info in at.info]
