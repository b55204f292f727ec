"""The ``compare`` command: a quick run end to end, the cache option and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import one_torch_thread

from davae.cli import main
from davae.study_plan import METHODS, QUICK_OVERRIDES
from davae.study_report import load_study


def test_compare_quick_run(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, cache = tmp_path / "study", tmp_path / "models"
    with one_torch_thread():
        status = main(
            [
                "compare",
                str(dataset),
                "--out",
                str(out),
                "--quick",
                "--epochs",
                "2",
                "--skip-ablation",
                "--skip-imbalance",
                "--labelled-defects",
                "2",
                "--cache",
                str(cache),
            ]
        )
    printed = capsys.readouterr().out
    result = load_study(out)
    config = result.info["settings"]["config"]

    assert status == 0
    assert list(result.results["method"]) == list(METHODS)
    assert set(result.results["study"]) == {"main"}
    assert result.info["settings"]["quick"] is True
    assert config["train"]["epochs"] == 2
    assert config["vae"]["image_size"] == QUICK_OVERRIDES["vae__image_size"]
    assert result.info["counts"]["labelled_defects"] == 4
    assert "Quick smoke run" in result.summary
    assert not result.path("ablation").exists()
    assert len(list(cache.glob("*.pt"))) == 2
    assert not (out / "cache").exists()
    assert "da_vae" in printed
    assert "quick smoke run" in printed


def test_compare_bad_dataset_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    errors = capsys.readouterr().err.strip().splitlines()

    assert status == 2
    assert len(errors) == 1
    assert errors[0].startswith("error: ")
    assert "train/good" in errors[0]


def test_compare_rejects_zero_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["compare", str(tmp_path), "--out", str(tmp_path / "out"), "--seeds", "0"])
    assert caught.value.code == 2
    assert "positive integer" in capsys.readouterr().err
