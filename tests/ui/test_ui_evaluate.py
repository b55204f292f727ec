"""The Evaluate page: a comparative study run from the page, then its table and figures."""

from __future__ import annotations

from pathlib import Path

from ui_helpers import all_text, newest_job_id, wait_for_job, write_mvtec

from storage.db import Storage
from storage.models import JobStatus
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def test_run_and_open_study(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    dataset = write_mvtec(tmp_path / "parts")
    at = open_app("evaluate", language="ko")
    assert KO["evaluate.no_studies"] in [info.value for info in at.info]
    at.text_input(key="evaluate_dataset").set_value(str(dataset))
    at.number_input(key="evaluate_epochs").set_value(1)
    at.checkbox(key="evaluate_ablation").uncheck()
    at.checkbox(key="evaluate_imbalance").uncheck().run()
    at.button(key="evaluate_start").click().run()
    assert not at.exception

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    assert KO["evaluate.done"] in [success.value for success in at.success]
    assert KO["evaluate.quick_banner"] in [warning.value for warning in at.warning]
    table = at.dataframe[0].value
    methods = list(table[KO["evaluate.column.method"]])
    assert methods[:2] == ["DA-VAE", KO["evaluate.method.vae_no_augment"]]
    assert KO["common.score_metric.recall"] in table.columns
    text = all_text(at)
    assert KO["evaluate.chart.roc_pr_title"].format(dataset="parts") in text
    assert KO["evaluate.chart.fpr"] in text


def test_missing_dataset_error(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    at = open_app("evaluate")
    at.text_input(key="evaluate_dataset").set_value(str(tmp_path / "missing")).run()
    at.button(key="evaluate_start").click().run()
    assert [error.value for error in at.error] == [
        f"{tmp_path / 'missing'}: no such file or folder."
    ]


def test_not_a_dataset_fails(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    at = open_app("evaluate", language="ko")
    at.text_input(key="evaluate_dataset").set_value(str(tmp_path / "flat")).run()
    at.button(key="evaluate_start").click().run()

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.FAILED
    at.run()
    errors = [error.value for error in at.error]
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'flat'}: MVTec 형식의 데이터셋 폴더가 아닙니다")
