"""Fixtures of the study tests: a generated dataset, a tiny DA-VAE and one full study run.

The dataset comes from study_images.py, so the tests need no data files.
Plain helpers live in study_helpers.py: test modules import them from
there, because every test folder has a module named conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import LABELLED_PER_CLASS, SEEDS, TINY_OVERRIDES, CountedRun, run_counted
from study_images import make_dataset

from davae.config import DetectorConfig
from davae.study_plan import StudySettings


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("study-data") / "parts")


@pytest.fixture(scope="session")
def tiny_config() -> DetectorConfig:
    return DetectorConfig().replace(**TINY_OVERRIDES)


@pytest.fixture(scope="session")
def settings(tiny_config: DetectorConfig) -> StudySettings:
    return StudySettings(
        config=tiny_config, seeds=SEEDS, labelled_defects_per_class=LABELLED_PER_CLASS
    )


@pytest.fixture(scope="session")
def full_run(
    dataset: Path, settings: StudySettings, tmp_path_factory: pytest.TempPathFactory
) -> CountedRun:
    """The whole study (main, both ablations, imbalance) on the generated dataset."""
    work = tmp_path_factory.mktemp("study-run")
    return run_counted(dataset, work / "out", settings, work / "cache")
