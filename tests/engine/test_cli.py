"""The command line: help, a train / score / evaluate round trip, and one-line errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_images import ZOO_GOOD, ZOO_IGNORED, ZOO_REJECTED, write_mvtec, zip_bytes
from PIL import Image

from davae.bundle import load_bundle
from davae.cli import SCORE_COLUMNS, main

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIRED_COLUMNS = ("image_path", "pred_score", "recon_score", "latent_distance", "pred_label")
DECISION_KEYS = ("image_auroc", "precision", "recall", "f1", "fpr")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def assert_one_line_error(code: int, err: str, only_line: bool = True) -> str:
    """Check exit status 2 and one ``error:`` line, the last one on stderr; return it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    if only_line:
        assert len(lines) == 1, lines
    return lines[-1]


@pytest.fixture(scope="module")
def cli_model(mvtec_root, tmp_path_factory):
    """A model trained through the command line on the generated train/good folder."""
    out = tmp_path_factory.mktemp("cli") / "model.pt"
    code = main(
        [
            "train",
            str(mvtec_root / "train" / "good"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--latent-dim",
            "8",
            "--augment-iterations",
            "1",
            "--no-augment",
            "noise",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize("command", [[], ["train"], ["score"], ["evaluate"]])
def test_help_for_each_command(capsys, command):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    out = capsys.readouterr().out

    assert caught.value.code == 0
    assert out.startswith("usage: python -m davae")
    if command == ["train"]:
        for option in ("--epochs", "--image-size", "--latent-dim", "--augment-iterations"):
            assert option in out
    if command:
        assert "--out" in out


def test_train_writes_bundle_with_options(cli_model):
    detector = load_bundle(cli_model)

    assert detector.config.vae.image_size == 32
    assert detector.config.vae.latent_dim == 8
    assert detector.config.train.epochs == 1
    assert detector.config.train.seed == 3
    assert detector.config.augment.iterations == 1
    assert detector.config.augment.noise is False
    assert detector.fingerprint["image_count"] == 12
    assert len(detector.history) == 1


def test_score_writes_every_file(capsys, tiny_bundle, input_zoo, tmp_path):
    out = tmp_path / "results.csv"
    code, stdout, _ = run_cli(capsys, "score", tiny_bundle, input_zoo, "--out", out)
    rows = read_rows(out)
    by_name = {row["file_name"] or row["image_path"]: row for row in rows}

    assert code == 0
    assert list(rows[0]) == list(SCORE_COLUMNS)
    assert set(REQUIRED_COLUMNS) | {"error"} <= set(rows[0])
    assert len(rows) == len(ZOO_GOOD) + len(ZOO_REJECTED) + len(ZOO_IGNORED)
    # Every good file and, under the default pixel limit, oversized.png.
    scored = [row for row in rows if row["pred_label"]]
    assert len(scored) == len(ZOO_GOOD) + 1
    for row in scored:
        assert row["pred_label"] in ("normal", "anomalous")
        assert row["error"] == ""
        assert math.isfinite(float(row["pred_score"]))
        assert (float(row["pred_score"]) > 1.0) == (row["pred_label"] == "anomalous")
    for name in set(ZOO_REJECTED) - {"oversized.png"}:
        row = by_name[name]
        assert row["pred_label"] == ""
        assert row["error"] != "", name
    assert sum(row["error"].startswith("ignored:") for row in rows) == len(ZOO_IGNORED)
    assert f"{len(scored)} scored" in stdout


def test_score_combined_matches_thresholds(capsys, tiny_bundle, input_zoo, tmp_path):
    out = tmp_path / "results.csv"
    run_cli(capsys, "score", tiny_bundle, input_zoo / "a_gray.png", "--out", out)
    (row,) = read_rows(out)
    thresholds = load_bundle(tiny_bundle).thresholds
    expected = max(
        float(row["recon_score"]) / thresholds.recon,
        float(row["latent_distance"]) / thresholds.latent,
    )

    assert float(row["pred_score"]) == pytest.approx(expected, rel=1e-4)
    assert row["image_path"] == str(input_zoo / "a_gray.png")
    assert row["width"] == "40"
    assert row["height"] == "30"


def test_score_zip_keeps_member_folders(capsys, tiny_bundle, input_zoo, tmp_path):
    png = (input_zoo / "a_gray.png").read_bytes()
    archive = tmp_path / "batch.zip"
    archive.write_bytes(zip_bytes({"lineA/img_001.png": png, "lineB/img_001.png": png}))
    out = tmp_path / "zip.csv"
    code, _, _ = run_cli(capsys, "score", tiny_bundle, archive, "--out", out)
    rows = read_rows(out)

    assert code == 0
    assert [row["image_path"] for row in rows] == [
        f"{archive}/lineA/img_001.png",
        f"{archive}/lineB/img_001.png",
    ]
    assert [row["folder"] for row in rows] == ["lineA", "lineB"]


def test_score_writes_heatmaps(capsys, tiny_bundle, input_zoo, tmp_path):
    out, heatmaps = tmp_path / "r.csv", tmp_path / "heat"
    code, _, _ = run_cli(
        capsys, "score", tiny_bundle, input_zoo / "lineA", "--out", out, "--heatmaps", heatmaps
    )
    written = heatmaps / "img_001.png.heatmap.png"

    assert code == 0
    with Image.open(written) as image:
        assert image.size == (40, 30)


def test_score_heatmaps_same_name_kept(capsys, tiny_bundle, input_zoo, tmp_path):
    out, heatmaps = tmp_path / "r.csv", tmp_path / "heat"
    first, second = input_zoo / "lineA" / "img_001.png", input_zoo / "lineB" / "img_001.png"
    code, _, _ = run_cli(
        capsys, "score", tiny_bundle, first, second, "--out", out, "--heatmaps", heatmaps
    )
    rows = read_rows(out)

    assert code == 0
    assert [row["heatmap"] for row in rows] == [
        "img_001.png.heatmap.png",
        "img_001.png.2.heatmap.png",
    ]
    assert sorted(path.name for path in heatmaps.iterdir()) == [
        "img_001.png.2.heatmap.png",
        "img_001.png.heatmap.png",
    ]


def test_score_multiscale_column(capsys, cli_model, input_zoo, tmp_path):
    out = tmp_path / "r.csv"
    run_cli(capsys, "score", cli_model, input_zoo / "lineA", "--out", out)
    (row,) = read_rows(out)

    # The CLI trains with the default configuration, which thresholds this distance.
    assert float(row["latent_multiscale"]) == pytest.approx(float(row["latent_distance"]))
    assert row["heatmap"] == ""


def test_score_threshold_override(capsys, tiny_bundle, input_zoo, tmp_path):
    out = tmp_path / "r.csv"
    run_cli(
        capsys,
        "score",
        tiny_bundle,
        input_zoo / "lineA",
        "--out",
        out,
        "--recon-threshold",
        "1e-9",
    )
    (row,) = read_rows(out)

    assert row["pred_label"] == "anomalous"


def test_evaluate_report_is_strict_json(capsys, cli_model, tmp_path):
    dataset = write_mvtec(tmp_path / "parts", with_masks=False)
    out = tmp_path / "report.json"
    code, stdout, _ = run_cli(capsys, "evaluate", cli_model, dataset, "--out", out)
    assert code == 0

    def reject_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    report = json.loads(out.read_text(encoding="utf-8"), parse_constant=reject_constant)

    # Without masks the pixel AUROC is undefined, and the table gives the reason.
    assert report["pixel_auroc"] is None
    assert "pixel AUROC: - (no masks in ground_truth/<defect>/)" in stdout


def test_evaluate_writes_report(capsys, cli_model, mvtec_root, tmp_path):
    out = tmp_path / "report.json"
    code, stdout, _ = run_cli(capsys, "evaluate", cli_model, mvtec_root, "--out", out)
    report = json.loads(out.read_text(encoding="utf-8"))

    assert code == 0
    for key in DECISION_KEYS:
        assert math.isfinite(report["combined"][key]), key
    # The CLI trains with the default configuration, which has multi-scale statistics.
    assert set(report["scores"]) == {
        "recon_mean",
        "recon_max",
        "latent_euclidean",
        "latent_mahalanobis",
        "latent_multiscale",
    }
    for metrics in report["scores"].values():
        for key in DECISION_KEYS:
            assert math.isfinite(metrics[key]), key
    assert report["model"] == str(cli_model)
    assert "combined" in stdout
    assert "pixel AUROC" in stdout
    assert f"report written to {out}" in stdout


def test_bad_model_file_is_one_line_error(capsys, tmp_path, input_zoo):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(2048))
    code, _, err = run_cli(capsys, "score", bad, input_zoo, "--out", tmp_path / "r.csv")

    assert "bad.pt" in assert_one_line_error(code, err)


def test_missing_model_file_is_one_line_error(capsys, tmp_path, mvtec_root):
    code, _, err = run_cli(
        capsys, "evaluate", tmp_path / "none.pt", mvtec_root, "--out", tmp_path / "r.json"
    )

    assert "none.pt" in assert_one_line_error(code, err)


def test_missing_score_input_is_one_line_error(capsys, tiny_bundle, tmp_path):
    out = tmp_path / "r.csv"
    code, _, err = run_cli(capsys, "score", tiny_bundle, tmp_path / "no-such-dir", "--out", out)

    assert "no-such-dir" in assert_one_line_error(code, err)
    assert not out.exists()


def test_missing_train_input_is_one_line_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", tmp_path / "absent", "--out", tmp_path / "m.pt")

    assert "absent" in assert_one_line_error(code, err)


def test_missing_dataset_is_one_line_error(capsys, tiny_bundle, tmp_path):
    code, _, err = run_cli(
        capsys, "evaluate", tiny_bundle, tmp_path / "nothing", "--out", tmp_path / "r.json"
    )

    assert_one_line_error(code, err)


def test_too_few_images_is_error(capsys, input_zoo, tmp_path):
    code, _, err = run_cli(capsys, "train", input_zoo / "lineA", "--out", tmp_path / "m.pt")

    # Loading prints a summary line to stderr before training is refused.
    assert "at least" in assert_one_line_error(code, err, only_line=False)
    assert not (tmp_path / "m.pt").exists()
    assert "training:" not in err  # no progress bar for training that never started


def test_invalid_setting_is_one_line_error(capsys, input_zoo, tmp_path):
    code, _, err = run_cli(
        capsys, "train", input_zoo, "--out", tmp_path / "m.pt", "--image-size", "40"
    )

    assert "image_size" in assert_one_line_error(code, err)


def test_subprocess_bad_model_exit_code(tmp_path, input_zoo):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a model")
    completed = subprocess.run(
        [sys.executable, "-m", "davae", "score", bad, input_zoo, "--out", tmp_path / "r.csv"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = completed.stderr.strip().splitlines()

    assert completed.returncode == 2
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "bad.pt" in lines[0]
