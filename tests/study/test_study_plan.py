"""The study plan: which DA-VAE rows run, which share a model, and the settings checks."""

from __future__ import annotations

import json

import pytest

from davae.config import DetectorConfig
from davae.errors import DavaeError
from davae.study_plan import (
    QUICK_OVERRIDES,
    StudySettings,
    augmentation_config,
    config_key,
    plan_vae_rows,
    quick_config,
)

ALL_TRANSFORMS = ["rotate90", "hflip", "vflip", "brightness", "contrast", "noise"]
FINGERPRINT = {"image_count": 50, "content_sha256": "ab" * 32}


@pytest.fixture
def base() -> DetectorConfig:
    """Every transform on and K = 4, set here so that the test does not follow the defaults."""
    changes = {f"augment__{name}": True for name in ALL_TRANSFORMS}
    return DetectorConfig().replace(augment__iterations=4, **changes)


def _identity(config: DetectorConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def test_main_rows(base: DetectorConfig) -> None:
    rows = [r for r in plan_vae_rows(StudySettings(config=base)) if r.study == "main"]

    assert [(r.method, r.augment, r.iterations) for r in rows] == [
        ("da_vae", "all", 4),
        ("vae_no_augment", "none", 0),
    ]
    assert rows[0].config == base
    assert rows[1].config.augment.iterations == 0


def test_transform_ablation_rows(base: DetectorConfig) -> None:
    rows = [r for r in plan_vae_rows(StudySettings(config=base)) if r.study.endswith("transforms")]
    expected = {
        "none": [],
        "rotate90": ["rotate90"],
        "hflip": ["hflip"],
        "vflip": ["vflip"],
        "brightness": ["brightness"],
        "contrast": ["contrast"],
        "noise": ["noise"],
        "geometric": ["rotate90", "hflip", "vflip"],
        "photometric": ["brightness", "contrast", "noise"],
        "all": ALL_TRANSFORMS,
    }

    assert [r.augment for r in rows] == list(expected)
    for row in rows:
        if row.augment == "none":
            assert row.config.augment.iterations == 0
        else:
            assert row.config.augment.iterations == 4
            assert row.config.augment.enabled_transforms == expected[row.augment]


def test_iteration_ablation_rows(base: DetectorConfig) -> None:
    rows = [r for r in plan_vae_rows(StudySettings(config=base)) if r.study.endswith("iterations")]

    assert [r.iterations for r in rows] == [0, 1, 2, 4, 8]
    assert [r.config.augment.iterations for r in rows] == [0, 1, 2, 4, 8]
    for row in rows:
        assert row.augment == "all"
        assert row.config.augment.enabled_transforms == ALL_TRANSFORMS


def test_shared_configurations_train_once(base: DetectorConfig) -> None:
    rows = plan_vae_rows(StudySettings(config=base))
    by_setting = {(r.study, r.method, r.augment, r.iterations): r.config for r in rows}

    # 2 main rows + 10 transform rows + 5 iteration rows, of which "all" and
    # K = 4 are the main row, and "none" and K = 0 the no-augmentation row.
    assert len(rows) == 17
    assert len({_identity(r.config) for r in rows}) == 13
    no_augment = by_setting[("main", "vae_no_augment", "none", 0)]
    assert by_setting[("ablation_transforms", "da_vae", "none", 0)] == no_augment
    assert by_setting[("ablation_iterations", "da_vae", "all", 0)] == no_augment
    assert by_setting[("ablation_transforms", "da_vae", "all", 4)] == base
    assert by_setting[("ablation_iterations", "da_vae", "all", 4)] == base


def test_skip_ablation_plans_main_rows_only(base: DetectorConfig) -> None:
    rows = plan_vae_rows(StudySettings(config=base, ablation=False))
    assert [r.study for r in rows] == ["main", "main"]


def test_transform_ablation_with_zero_iterations_uses_four(base: DetectorConfig) -> None:
    settings = StudySettings(config=base.replace(augment__iterations=0))
    rows = [r for r in plan_vae_rows(settings) if r.study == "ablation_transforms"]
    assert {r.iterations for r in rows if r.augment != "none"} == {4}


def test_no_augmentation_ignores_transform_switches(base: DetectorConfig) -> None:
    switched_off = base.replace(augment__noise=False, augment__hflip=False)
    assert augmentation_config(base, (), 0) == augmentation_config(switched_off, ("noise",), 0)


def test_config_key_follows_config_and_images(base: DetectorConfig) -> None:
    key = config_key(base, FINGERPRINT)

    assert key == config_key(DetectorConfig.from_dict(base.to_dict()), dict(FINGERPRINT))
    assert key != config_key(base.replace(train__epochs=base.train.epochs + 1), FINGERPRINT)
    assert key != config_key(base, {**FINGERPRINT, "content_sha256": "cd" * 32})


def test_quick_config_is_small() -> None:
    config = quick_config()
    for name, value in QUICK_OVERRIDES.items():
        part, field = name.split("__")
        assert getattr(getattr(config, part), field) == value
    config.validate()


@pytest.mark.parametrize(
    "change",
    [
        {"seeds": 0},
        {"defect_shares": (0.5, 1.0)},
        {"defect_shares": (0.0,)},
        {"defect_shares": ()},
        {"iterations": (0, 65)},
        {"labelled_defects_per_class": 0},
    ],
)
def test_settings_reject_invalid(change: dict) -> None:
    with pytest.raises(DavaeError) as caught:
        StudySettings(**change).validate()
    assert caught.value.code == "invalid_setting"
