"""Results of a comparative study: the rows, the files they are written to, reading them back.

A study folder contains:

- ``results.csv``: one row per method and setting (columns in
  :data:`RESULT_COLUMNS`, described in ``docs/study.md``);
- ``imbalance_runs.csv``: the imbalance rows before averaging, one per
  subsampling seed;
- ``scores.csv``: every evaluated image with its defect class, label and
  the score of each method of the main comparison;
- ``study.json``: settings, dataset, machine, timings, counts and the models;
- ``summary.md``: the tables in markdown;
- ``roc_pr.html``, ``ablation.html``, ``imbalance.html`` and the
  ``plotly.min.js`` they load from the same folder, so they open offline.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from davae.errors import DavaeError
from davae.metrics import METRIC_NAMES

logger = logging.getLogger(__name__)

METRIC_COLUMNS = METRIC_NAMES
STD_COLUMNS = tuple(f"{name}_std" for name in METRIC_COLUMNS)
TEXT_COLUMNS = ("study", "method", "augment", "model_key")
INTEGER_COLUMNS = (
    "iterations",
    "seed",
    "n_seeds",
    "n_test_good",
    "n_test_anomalous",
    "tp",
    "fp",
    "tn",
    "fn",
    "epochs_run",
    "subsample_seed",
)
RESULT_COLUMNS = (
    "study",
    "method",
    "augment",
    "iterations",
    "defect_share",
    "defect_share_actual",
    "seed",
    "n_seeds",
    "n_test_good",
    "n_test_anomalous",
    *METRIC_COLUMNS,
    *STD_COLUMNS,
    "threshold",
    "tp",
    "fp",
    "tn",
    "fn",
    "train_seconds",
    "epochs_run",
    "cached",
    "model_key",
)
RUN_COLUMNS = (
    "method",
    "defect_share",
    "defect_share_actual",
    "subsample_seed",
    "n_test_good",
    "n_test_anomalous",
    *METRIC_COLUMNS,
    "threshold",
)
FILES = {
    "results": "results.csv",
    "imbalance_runs": "imbalance_runs.csv",
    "scores": "scores.csv",
    "info": "study.json",
    "summary": "summary.md",
    "roc_pr": "roc_pr.html",
    "ablation": "ablation.html",
    "imbalance": "imbalance.html",
}


@dataclass
class StudyResult:
    """A study's tables and run information, as written to or read from its folder."""

    directory: Path
    results: pd.DataFrame  # RESULT_COLUMNS, one row per method and setting
    imbalance_runs: pd.DataFrame  # RUN_COLUMNS, one row per method, share and seed
    scores: pd.DataFrame  # image, defect, label, then one column per main method
    info: dict[str, Any]  # the contents of study.json
    summary: str  # the contents of summary.md

    def path(self, name: str) -> Path:
        """Return the path of one of the study's FILES, e.g. ``path("roc_pr")``."""
        return self.directory / FILES[name]

    def rows(self, study: str) -> pd.DataFrame:
        """Return the rows of one study part ("main", "ablation_transforms", ...)."""
        return self.results[self.results["study"] == study].reset_index(drop=True)


def normalise_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the results columns fixed types, so that a loaded study equals the one written.

    Text columns become str ("" when empty), counts nullable integers,
    "cached" bool and every other column float64.
    """
    return _normalise(frame, TEXT_COLUMNS, RESULT_COLUMNS)


def normalise_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return _normalise(frame, ("method",), RUN_COLUMNS)


def _normalise(
    frame: pd.DataFrame, text: tuple[str, ...], columns: tuple[str, ...]
) -> pd.DataFrame:
    frame = frame.reindex(columns=list(columns)).copy()
    for column in columns:
        if column in text:
            frame[column] = frame[column].fillna("").astype(str)
        elif column == "cached":
            frame[column] = frame[column].map(_to_bool).astype(bool)
        elif column in INTEGER_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").round().astype("Int64")
        else:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.reset_index(drop=True)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if value is not None and value == value else False


def write_study(result: StudyResult) -> None:
    """Write the result's files into ``result.directory``, figures included."""
    from davae.study_figures import write_figures

    result.directory.mkdir(parents=True, exist_ok=True)
    result.results.to_csv(result.path("results"), index=False)
    result.imbalance_runs.to_csv(result.path("imbalance_runs"), index=False)
    result.scores.to_csv(result.path("scores"), index=False)
    result.path("info").write_text(
        json.dumps(result.info, indent=2, default=str) + "\n", encoding="utf-8"
    )
    result.path("summary").write_text(result.summary, encoding="utf-8")
    write_figures(result)
    logger.info("study written to %s", result.directory)


def load_study(directory: str | os.PathLike[str]) -> StudyResult:
    """Read a study folder written by :func:`davae.study.run_study`.

    Raises DavaeError (code ``study_invalid``) when the folder or one of
    its tables is missing or unreadable.
    """
    directory = Path(directory)
    files = {name: directory / FILES[name] for name in ("results", "scores", "info", "summary")}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DavaeError(
            "study_invalid",
            f"{directory}: not a study folder (missing {', '.join(missing)}); "
            "run `python -m davae compare` to create one",
            path=str(directory),
            detail="missing " + ", ".join(missing),
        )
    runs_path = directory / FILES["imbalance_runs"]
    try:
        results = pd.read_csv(files["results"], keep_default_na=False, na_values=[""])
        runs = (
            pd.read_csv(runs_path, keep_default_na=False, na_values=[""])
            if runs_path.is_file()
            else pd.DataFrame(columns=list(RUN_COLUMNS))
        )
        scores = pd.read_csv(files["scores"], keep_default_na=False, na_values=[""])
        info = json.loads(files["info"].read_text(encoding="utf-8"))
        summary = files["summary"].read_text(encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DavaeError(
            "study_invalid",
            f"{directory}: the study files cannot be read ({error})",
            path=str(directory),
            detail=str(error),
        ) from error
    absent = [column for column in RESULT_COLUMNS if column not in results.columns]
    if absent:
        raise DavaeError(
            "study_invalid",
            f"{files['results']}: missing columns {', '.join(absent)}",
            path=str(directory),
            detail="missing columns " + ", ".join(absent),
        )
    scores["image"] = scores["image"].astype(str)
    scores["defect"] = scores["defect"].astype(str)
    return StudyResult(
        directory=directory,
        results=normalise_results(results),
        imbalance_runs=normalise_runs(runs),
        scores=scores,
        info=info,
        summary=summary,
    )
