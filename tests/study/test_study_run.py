"""A whole study on a generated dataset: rows, files, cache, reading back, cancelling."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from study_helpers import LABELLED_PER_CLASS, SEEDS, CountedRun, run_counted

from davae.errors import DavaeError, TrainingCancelled
from davae.study import run_study
from davae.study_plan import METHODS, StudySettings, plan_vae_rows
from davae.study_report import RESULT_COLUMNS, load_study

REQUIRED_COLUMNS = ("method", "image_auroc", "aupr", "precision", "recall", "f1", "fpr")
METRICS = (
    "image_auroc",
    "aupr",
    "precision",
    "recall",
    "f1",
    "fpr",
    "recall_at_fpr_1",
    "recall_at_fpr_5",
)


def test_every_method_runs(full_run: CountedRun) -> None:
    main = full_run.result.rows("main")

    assert list(main["method"]) == list(METHODS)
    for metric in METRICS:
        assert main[metric].notna().all(), metric


def test_da_vae_separates_obvious_defects(full_run: CountedRun) -> None:
    main = full_run.result.rows("main").set_index("method")
    assert main.loc["da_vae", "image_auroc"] > 0.9


def test_results_csv_has_every_column(full_run: CountedRun) -> None:
    with open(full_run.result.path("results"), newline="", encoding="utf-8") as stream:
        header = next(csv.reader(stream))

    assert header == list(RESULT_COLUMNS)
    for column in (*REQUIRED_COLUMNS, "study", "augment", "iterations", "defect_share", "seed"):
        assert column in header


def test_ablation_rows(full_run: CountedRun) -> None:
    transforms = full_run.result.rows("ablation_transforms")
    iterations = full_run.result.rows("ablation_iterations")

    assert list(transforms["augment"]) == [
        "none",
        "rotate90",
        "hflip",
        "vflip",
        "brightness",
        "contrast",
        "noise",
        "geometric",
        "photometric",
        "all",
    ]
    assert set(transforms["method"]) == {"da_vae"}
    assert list(iterations["iterations"]) == [0, 1, 2, 4, 8]
    assert set(iterations["augment"]) == {"all"}


def test_imbalance_rows(full_run: CountedRun) -> None:
    result = full_run.result
    imbalance = result.rows("imbalance")
    normals = int(result.rows("main")["n_test_good"].iloc[0])
    defects = int(result.rows("main")["n_test_anomalous"].iloc[0])

    assert len(imbalance) == len(METHODS) * 3
    assert len(result.imbalance_runs) == len(METHODS) * 3 * SEEDS
    for method in METHODS:
        rows = imbalance[imbalance["method"] == method]
        assert list(rows["defect_share"]) == [0.5, 0.1, 0.01]
        for _, row in rows.iterrows():
            requested = round(row["defect_share"] * normals / (1 - row["defect_share"]))
            assert row["n_test_anomalous"] == min(max(1, requested), defects)
            assert row["n_test_good"] == normals
            assert row["n_seeds"] == SEEDS
            assert row["defect_share_actual"] == pytest.approx(
                row["n_test_anomalous"] / (normals + row["n_test_anomalous"])
            )
            for metric in METRICS:
                assert np.isfinite(row[f"{metric}_std"]), (method, metric)


def test_imbalance_mean_matches_runs(full_run: CountedRun) -> None:
    result = full_run.result
    runs = result.imbalance_runs
    row = result.rows("imbalance").iloc[-1]
    same_setting = (runs["method"] == row["method"]) & (runs["defect_share"] == row["defect_share"])
    matching = runs[same_setting]

    assert len(matching) == SEEDS
    assert row["aupr"] == pytest.approx(matching["aupr"].mean())
    assert row["aupr_std"] == pytest.approx(matching["aupr"].std(ddof=1))


def test_one_evaluation_set_for_every_row(full_run: CountedRun) -> None:
    result = full_run.result
    rows = result.results[result.results["study"] != "imbalance"]
    labelled = set(result.info["labelled_defects"])

    assert rows["n_test_good"].nunique() == 1
    assert rows["n_test_anomalous"].nunique() == 1
    assert len(result.scores) == rows["n_test_good"].iloc[0] + rows["n_test_anomalous"].iloc[0]
    assert len(labelled) == 2 * LABELLED_PER_CLASS
    assert not labelled & set(result.scores["image"])
    assert result.info["counts"]["labelled_normals"] == len(labelled)


def test_each_configuration_trained_once(full_run: CountedRun, settings: StudySettings) -> None:
    unique = {json.dumps(r.config.to_dict(), sort_keys=True) for r in plan_vae_rows(settings)}
    assert full_run.train_calls == len(unique)
    assert len(list(full_run.cache.glob("*.pt"))) == len(unique)


def test_second_run_trains_nothing(
    full_run: CountedRun, dataset: Path, settings: StudySettings, tmp_path: Path
) -> None:
    again = run_counted(dataset, tmp_path / "again", settings, full_run.cache)

    vae_rows = again.result.results[again.result.results["model_key"] != ""]

    assert again.train_calls == 0
    assert len(vae_rows) > 0
    assert vae_rows["cached"].all()
    pd.testing.assert_frame_equal(
        again.result.results[list(METRICS)], full_run.result.results[list(METRICS)]
    )


def test_changed_setting_trains_only_new_model(
    full_run: CountedRun, dataset: Path, settings: StudySettings, tmp_path: Path
) -> None:
    changed = dataclasses.replace(settings, iterations=(0, 1, 2, 3, 4, 8), imbalance=False)
    again = run_counted(dataset, tmp_path / "changed", changed, full_run.cache)
    iterations = again.result.rows("ablation_iterations").set_index("iterations")

    assert again.train_calls == 1
    assert not iterations.loc[3, "cached"]
    assert iterations.drop(index=3)["cached"].all()


def test_load_study_round_trip(full_run: CountedRun) -> None:
    written = full_run.result
    loaded = load_study(written.directory)

    pd.testing.assert_frame_equal(loaded.results, written.results)
    pd.testing.assert_frame_equal(loaded.imbalance_runs, written.imbalance_runs)
    pd.testing.assert_frame_equal(loaded.scores, written.scores, check_dtype=False)
    assert loaded.summary == written.summary
    assert loaded.info["counts"] == written.info["counts"]
    assert loaded.info["settings"] == written.info["settings"]


def test_html_figures_work_offline(full_run: CountedRun) -> None:
    result = full_run.result
    assert (result.directory / "plotly.min.js").is_file()
    for name in ("roc_pr", "ablation", "imbalance"):
        text = result.path(name).read_text(encoding="utf-8")
        sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", text)
        assert sources == ["plotly.min.js"], name
        assert not re.search(r"https?://", " ".join(sources))


def test_summary_states_settings(full_run: CountedRun) -> None:
    summary = full_run.result.summary

    assert "## Main comparison" in summary
    assert "## Imbalance" in summary
    assert "vae.image_size=32" in summary
    assert "Quick smoke run" not in summary
    for method in METHODS:
        assert f"| {method} |" in summary


def test_summary_lists_defect_classes_only(full_run: CountedRun) -> None:
    counts = full_run.result.info["counts"]
    line = next(line for line in full_run.result.summary.splitlines() if "Evaluation set" in line)
    listed = line[line.index("(") + 1 : line.index(")")]

    defect_classes = sorted(name for name in counts["test_per_class"] if name != "good")
    assert [entry.split(" ")[0] for entry in listed.split(", ")] == defect_classes
    assert "good" not in listed


def test_progress_reaches_total(full_run: CountedRun) -> None:
    steps = [step for step, _, _ in full_run.progress]
    totals = {total for _, total, _ in full_run.progress}

    assert len(totals) == 1
    assert steps == sorted(steps)
    assert steps[-1] == totals.pop()
    assert any("epoch" in message for _, _, message in full_run.progress)


def test_cancel_stops_before_writing(
    dataset: Path, settings: StudySettings, tmp_path: Path
) -> None:
    calls = []

    def cancel_on_second_poll() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(TrainingCancelled):
        run_study(dataset, tmp_path / "out", settings, should_cancel=cancel_on_second_poll)
    assert not (tmp_path / "out" / "results.csv").exists()


def test_missing_layout_rejected(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DavaeError) as caught:
        run_study(tmp_path, tmp_path / "out")
    assert caught.value.code == "dataset_layout"


def test_load_study_rejects_other_folder(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("method\nda_vae\n", encoding="utf-8")
    with pytest.raises(DavaeError) as caught:
        load_study(tmp_path)
    assert caught.value.code == "study_invalid"
    assert "summary.md" in str(caught.value)
