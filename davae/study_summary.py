"""The markdown summary of a comparative study: settings, tables and computed comparisons."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from davae.study_report import StudyResult

# Column headers of the markdown tables, by results column.
HEADERS = {
    "image_auroc": "AUROC",
    "aupr": "AUPR",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "fpr": "FPR",
    "recall_at_fpr_1": "recall@1%FPR",
    "recall_at_fpr_5": "recall@5%FPR",
}
_DECISION_METRICS = ("image_auroc", "aupr", "precision", "recall", "f1", "fpr")


def summary_markdown(result: StudyResult) -> str:
    """Write the study's summary: how it was run, the tables, and where DA-VAE is beaten."""
    info = result.info
    lines = [f"# Comparative study: {info['dataset']}", ""]
    if info["settings"]["quick"]:
        changes = ", ".join(info["config_changes"]) or "none"
        lines += [
            "> **Quick smoke run** (`--quick`): a small DA-VAE trained briefly "
            f"({changes}). These numbers show that the study runs on this data; "
            "they do not measure how well the method detects defects.",
            "",
        ]
    lines += [*_run_lines(info), ""]

    main = result.rows("main")
    lines += ["## Main comparison", ""]
    lines += [*_table(main, ["method"], list(HEADERS)), ""]
    lines += [*_comparison_lines(main), ""]

    transforms = result.rows("ablation_transforms")
    if not transforms.empty:
        iterations = int(transforms[transforms["augment"] != "none"]["iterations"].iloc[0])
        lines += [f"## Augmentation ablation: transforms (K = {iterations} copies)", ""]
        lines += [*_table(transforms, ["augment", "iterations"], list(_DECISION_METRICS)), ""]
    by_iterations = result.rows("ablation_iterations")
    if not by_iterations.empty:
        lines += ["## Augmentation ablation: iterations K (all transforms)", ""]
        lines += [*_table(by_iterations, ["iterations"], list(_DECISION_METRICS)), ""]

    imbalance = result.rows("imbalance")
    if not imbalance.empty:
        seeds = int(imbalance["n_seeds"].iloc[0])
        lines += [
            f"## Imbalance: defect share of the test set (mean ± std over {seeds} seeds)",
            "",
            "Defects are subsampled and every test normal is kept. `defects` is the number "
            "of defect images per subsample; the actual share can differ from the target "
            "when too few defects exist or the count rounds to 0 (at least one is kept).",
            "",
        ]
        lines += [*_imbalance_table(imbalance), ""]

    lines += [
        "## Files",
        "",
        "`results.csv` (one row per method and setting), `imbalance_runs.csv` (one row per "
        "subsampling seed), `scores.csv` (every evaluated image and its scores), `study.json` "
        "(settings, machine, timings), `roc_pr.html`, `ablation.html` and `imbalance.html` "
        "(open offline with `plotly.min.js` in the same folder). The columns are described "
        "in docs/study.md of DA-VAE Inspector.",
        "",
    ]
    return "\n".join(lines)


def _run_lines(info: dict[str, Any]) -> list[str]:
    counts, machine, settings = info["counts"], info["machine"], info["settings"]
    models = info["models"]
    trained = [m for m in models if not m["cached"]]
    changes = "; ".join(info["config_changes"]) or "none"
    target_fpr = settings["config"]["scoring"]["target_fpr"]
    return [
        f"- Started {info['started_at']}, took {_duration(info['duration_s'])} on "
        f"{machine['cpu']} ({machine['cpu_count']} logical CPUs; torch {machine['torch']} "
        f"with {machine['torch_threads']} thread(s) on device {machine['device']}), "
        f"DA-VAE Inspector {info['library_version']}.",
        f"- DA-VAE models: {len(models)}, of which {len(trained)} trained in this run "
        f"({_duration(sum(m['train_seconds'] for m in trained))}) and "
        f"{len(models) - len(trained)} taken from the cache in `{info['cache_dir']}`.",
        f"- DA-VAE configuration: the defaults of this version, except: {changes}.",
        f"- Training normals: {counts['train_normals']}; {counts['fit_normals']} fit every "
        f"model, {counts['calibration_normals']} are held out to set each threshold at a "
        f"target false-alarm rate of {target_fpr:g}.",
        f"- Evaluation set: {counts['test_good']} normal and {counts['test_anomalous']} defect "
        f"images ({_class_counts(counts['test_per_class'])}); "
        f"{counts['rejected_test_files']} test files could not be decoded.",
        _forest_line(counts, settings),
        f"- Conventional detectors: grayscale images resized to "
        f"{settings['baselines']['feature_size']} x {settings['baselines']['feature_size']} "
        "pixels, flattened and standardised on the training normals.",
    ]


def _forest_line(counts: dict[str, Any], settings: dict[str, Any]) -> str:
    if not counts["labelled_defects"]:
        return (
            "- Random forest (supervised reference): left out, because no defect class has "
            "the 2 images needed to train on one and evaluate on the other."
        )
    return (
        f"- Random forest (supervised reference): trained on {counts['labelled_defects']} "
        f"labelled defects (up to {settings['labelled_defects_per_class']} per class, at most "
        f"half of each) and {counts['labelled_normals']} training normals; those defects are "
        "left out of every method's evaluation set."
    )


def _comparison_lines(main: pd.DataFrame) -> list[str]:
    """State, from the numbers, which methods beat the DA-VAE on which metric."""
    if "da_vae" not in set(main["method"]):
        return []
    reference = main[main["method"] == "da_vae"].iloc[0]
    lines = []
    for metric in ("image_auroc", "aupr", "f1", "recall_at_fpr_5"):
        better = main[(main["method"] != "da_vae") & (main[metric] > reference[metric])]
        names = ", ".join(
            f"{row.method} ({getattr(row, metric):.3f})" for row in better.itertuples()
        )
        lines.append(
            f"- {HEADERS[metric]}: da_vae {_number(reference[metric])}; "
            + (f"higher: {names}." if names else "no other method is higher.")
        )
    return lines


def _table(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> list[str]:
    header = [*keys, *(HEADERS[m] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        cells = [_cell(row[key]) for key in keys] + [_number(row[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _imbalance_table(frame: pd.DataFrame) -> list[str]:
    metrics = ("image_auroc", "aupr", "precision", "recall", "f1")
    header = ["method", "target share", "actual share", "defects", *(HEADERS[m] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        cells = [
            row["method"],
            f"{row['defect_share']:g}",
            f"{row['defect_share_actual']:.3f}",
            _cell(row["n_test_anomalous"]),
        ]
        cells += [f"{_number(row[m])} ± {_number(row[m + '_std'])}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value: Any) -> str:
    if pd.isna(value):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(value: float) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{float(value):.3f}"


def _class_counts(per_class: dict[str, int]) -> str:
    """List the defect classes with their image counts; the normals are counted apart."""
    defects = sorted((name, count) for name, count in per_class.items() if name != "good")
    return ", ".join(f"{name} {count}" for name, count in defects)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
