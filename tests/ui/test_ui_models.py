"""The Models page: registry table, one model's details, default switch, evaluation."""

from __future__ import annotations

from pathlib import Path

from ui_helpers import REVIEWER, all_text, newest_job_id, wait_for_job, write_mvtec

from storage import audit, registry
from storage.db import Storage
from storage.models import JobStatus, ModelVersion
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def register_again(storage: Storage, model: ModelVersion) -> ModelVersion:
    """Register the same bundle as version 2, which does not become the default."""
    stored = storage.files.store_model_bundle(storage.files.resolve(model.bundle_path))
    return storage.database.run_write(
        lambda session: registry.register_model_version(
            session,
            name=model.name,
            bundle=stored,
            config=model.config,
            thresholds=model.thresholds,
            created_by=REVIEWER,
        ),
        action="register again",
    )


def test_model_details(open_app, registered_model: ModelVersion) -> None:
    at = open_app("models")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table[EN["models.column.name"]]) == ["needles"]
    assert list(table[EN["models.column.default"]]) == [EN["common.yes"]]
    assert at.header[0].value == "needles version 1"
    settings = at.dataframe[1].value
    names, values = settings[EN["models.column.setting"]], settings[EN["models.column.value"]]
    values = dict(zip(names, values, strict=True))
    assert values[EN["models.setting.image_size"]] == "32 px"
    assert values[EN["models.setting.epochs_run"]] == "2"
    assert values[EN["models.setting.latent_metric"]] == EN["common.metric.multiscale"]
    assert len(at.get("plotly_chart")) == 2  # training curve and calibration histogram
    assert [info.value for info in at.info] == [EN["models.no_metrics"]]


def test_set_default(open_app, storage_handle: Storage, registered_model: ModelVersion) -> None:
    second = register_again(storage_handle, registered_model)
    at = open_app("models")
    at.selectbox(key="models_selected").set_value(second.id).run()
    at.button(key=f"models_default_{second.id}").click().run()

    with storage_handle.database.read() as session:
        default = registry.get_default_model_version(session)
        entries = audit.list_entries(session, action=audit.AuditAction.MODEL_SET_DEFAULT)
    assert default.id == second.id
    # Newest first: the switch to version 2, then version 1 becoming the first default.
    assert [(entry.entity_id, entry.actor) for entry in entries] == [
        (second.id, REVIEWER),
        (registered_model.id, REVIEWER),
    ]
    assert EN["models.is_default"] in [caption.value for caption in at.caption]


def test_evaluate_in_korean(
    open_app, storage_handle: Storage, registered_model: ModelVersion, tmp_path: Path
) -> None:
    dataset = write_mvtec(tmp_path / "parts")
    at = open_app("models", language="ko")
    at.text_input(key=f"models_dataset_{registered_model.id}").set_value(str(dataset)).run()
    at.button(key=f"models_evaluate_{registered_model.id}").click().run()

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    text = all_text(at)
    assert "정상 6장, 불량 8장의 테스트 이미지" in text
    metrics = at.dataframe[2].value
    assert metrics[KO["models.column.score"]].iloc[0] == KO["common.score_name.combined"]
    assert "AUROC" in metrics.columns
    per_class = at.dataframe[3].value
    assert sorted(per_class[KO["models.column.score"]]) == ["spot", "square"]
