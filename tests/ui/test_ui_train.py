"""The Train page: uploads or a server folder in, a registered model and its charts out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ui_helpers import (
    REVIEWER,
    all_text,
    newest_job_id,
    normal_pixels,
    png_bytes,
    wait_for,
    wait_for_job,
    write_images,
)

from davae.config import DetectorConfig
from storage import jobs, registry
from storage.db import Storage
from storage.models import JobStatus
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def tiny_settings(at) -> None:
    """Shrink the model so training takes seconds: 32 px, width 8, latent 8, one epoch."""
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_image_size").set_value(32)
    at.slider(key="train_iterations").set_value(0)
    at.number_input(key="train_latent_dim").set_value(8)
    at.number_input(key="train_width").set_value(8)
    at.run()


def test_train_from_uploads(open_app, storage_handle: Storage) -> None:
    rng = np.random.default_rng(0)
    files = [(f"정상_{i:02d}.png", png_bytes(normal_pixels(rng)), "image/png") for i in range(20)]
    files.append(("notes.txt", b"not an image", "text/plain"))
    at = open_app("train")
    at.file_uploader(key="train_files").set_value(files).run()
    at.text_input(key="train_model_name").set_value("needles")
    tiny_settings(at)
    at.button(key="train_start").click().run()
    assert not at.exception

    job = wait_for_job(storage_handle, at.session_state["train_job_id"])
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    assert not at.exception
    assert [m.value for m in at.success] == ["Registered needles version 1."]
    labels = [metric.label for metric in at.metric]
    assert "Reconstruction threshold (maximum)" in labels
    assert "Latent distance threshold (multi-scale)" in labels
    images_used = next(m.value for m in at.metric if m.label == EN["train.images_used"])
    assert images_used == "20"
    rejected = at.dataframe[0].value
    assert list(rejected[EN["common.column_file"]]) == ["notes.txt"]
    assert "not supported" in rejected[EN["common.column_reason"]][0]
    assert len(at.get("plotly_chart")) == 2  # calibration histogram and loss curve
    with storage_handle.database.read() as session:
        model = registry.get_default_model_version(session)
    assert (model.name, model.created_by, model.config["vae"]["image_size"]) == (
        "needles",
        REVIEWER,
        32,
    )


def test_train_from_folder_in_korean(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "good", 16)
    at = open_app("train", language="ko")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "good"))
    tiny_settings(at)
    at.button(key="train_start").click().run()
    assert not at.exception

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    assert at.title[0].value == KO["train.title"]
    assert [m.value for m in at.success] == ["모델 등록 완료: parts 버전 1"]
    assert KO["common.chart.calibration_title"] in all_text(at)


def test_missing_folder_shows_error(open_app, tmp_path: Path) -> None:
    at = open_app("train", language="ko")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "nowhere")).run()
    at.button(key="train_start").click().run()

    assert [error.value for error in at.error] == [
        f"{tmp_path / 'nowhere'}: 파일이나 폴더가 없습니다."
    ]


def test_relative_folder_error_names_absolute_path(open_app) -> None:
    at = open_app("train")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value("parts/train/good").run()
    at.button(key="train_start").click().run()

    looked_up = Path("parts/train/good").absolute()
    assert [error.value for error in at.error] == [f"{looked_up}: no such file or folder."]


def test_start_needs_reviewer(open_app) -> None:
    rng = np.random.default_rng(1)
    at = open_app("train", reviewer="")
    at.file_uploader(key="train_files").set_value(
        [("a.png", png_bytes(normal_pixels(rng)), "image/png")]
    ).run()

    assert at.button(key="train_start").disabled
    assert EN["common.reviewer_required"] in [warning.value for warning in at.warning]


def test_too_few_images_fail_in_korean(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "few", 3)
    at = open_app("train", language="ko")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "few")).run()
    at.button(key="train_start").click().run()

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.FAILED
    at.run()
    assert "사용할 수 있는 정상 이미지가 3장뿐입니다. 학습에는 최소 10장이 필요합니다." in [
        error.value for error in at.error
    ]


def test_cancel_from_page(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "good", 40)
    at = open_app("train")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "good"))
    tiny_settings(at)
    # Larger images and augmented copies slow each epoch down. Early stopping
    # can end the tiny model after a few short epochs, before Cancel is clicked.
    at.number_input(key="train_epochs").set_value(5000)
    at.selectbox(key="train_image_size").set_value(128)
    at.slider(key="train_iterations").set_value(8).run()
    at.button(key="train_start").click().run()
    job_id = at.session_state["train_job_id"]

    def training() -> bool:
        with storage_handle.database.read() as session:
            return (jobs.get_job(session, job_id).progress or {}).get("phase") == "training"

    wait_for(training)
    at.run()
    at.button(key=f"train_cancel_{job_id}").click().run()

    job = wait_for_job(storage_handle, job_id)
    assert job.status == JobStatus.CANCELLED
    at.run()
    assert EN["common.job_cancelled"] in [info.value for info in at.info]


def test_advanced_defaults_match_library(open_app) -> None:
    at = open_app("train")
    defaults = DetectorConfig()

    assert at.radio(key="train_mode").value == defaults.train.mode
    assert at.radio(key="train_channels").value == defaults.vae.channels
    assert at.radio(key="train_latent_metric").value == defaults.scoring.latent_metric
    assert at.radio(key="train_error_normalization").value == defaults.scoring.error_normalization
    assert at.radio(key="train_normalize").value == defaults.preprocess.normalize
    assert at.number_input(key="train_epochs").value == defaults.train.epochs
    assert at.number_input(key="train_width").value == defaults.vae.width
    assert at.slider(key="train_iterations").value == defaults.augment.iterations


def test_untouched_settings_train_defaults(
    open_app, storage_handle: Storage, tmp_path: Path
) -> None:
    write_images(tmp_path / "good", 16)
    at = open_app("train")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "good"))
    tiny_settings(at)
    at.button(key="train_start").click().run()

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.DONE, job.error_message
    with storage_handle.database.read() as session:
        model = registry.get_default_model_version(session)
    defaults = DetectorConfig().to_dict()
    assert model.config["preprocess"] == defaults["preprocess"]
    assert model.config["scoring"] == defaults["scoring"]
    assert model.config["augment"] == {**defaults["augment"], "iterations": 0}
    assert model.thresholds["latent_metric"] == "multiscale"


def test_train_global_mahalanobis(open_app, storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "good", 16)
    at = open_app("train")
    at.button_group(key="train_source").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "good"))
    at.radio(key="train_latent_metric").set_value("mahalanobis")
    at.radio(key="train_error_normalization").set_value("none")
    at.radio(key="train_normalize").set_value("none")
    tiny_settings(at)
    at.button(key="train_start").click().run()

    job = wait_for_job(storage_handle, newest_job_id(storage_handle))
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    assert "Latent distance threshold (Mahalanobis)" in [metric.label for metric in at.metric]
    with storage_handle.database.read() as session:
        model = registry.get_default_model_version(session)
    assert model.thresholds["latent_metric"] == "mahalanobis"
    assert model.config["scoring"]["error_normalization"] == "none"
    assert model.config["preprocess"]["normalize"] == "none"
