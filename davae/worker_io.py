"""Job parameters, job inputs and display files: what the worker reads and writes.

Pages build job parameters with the ``*_params`` functions here and enqueue
them with ``storage.jobs.enqueue_job``; the worker reads them back with
:func:`iter_job_inputs`. Each scored image gets display files, named after its
``scores.heatmap_path`` by :func:`display_files`. None of this imports torch.
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np
from PIL import Image as PILImage

from davae.inputs import Ignored, Rejected, Upload
from storage.db import Storage

UPLOADS_DIR = "uploads"
STUDIES_DIR = "studies"
# Rejected and ignored files listed in a job's progress and result. A scoring
# job's rejected files are all in the images table as well.
MAX_LISTED_FILES = 500


# -- job parameters ------------------------------------------------------------


def upload_entry(stored_path: str, name: str) -> dict[str, str]:
    """Describe one uploaded file: where it was saved (relative to DAVAE_HOME) and its name."""
    return {"upload": stored_path, "name": name}


def path_entry(path: str | os.PathLike[str]) -> dict[str, str]:
    """Describe a file, folder or ZIP archive on the server by its absolute path."""
    return {"path": str(Path(path).expanduser().absolute())}


def train_job_params(
    inputs: list[dict[str, str]],
    config: Mapping[str, Any],
    name: str,
    *,
    make_default: bool = False,
    upload_dir: str | None = None,
) -> dict[str, Any]:
    """Build the parameters of a training job; ``config`` is ``DetectorConfig.to_dict()``."""
    return {
        "inputs": list(inputs),
        "config": dict(config),
        "name": name,
        "make_default": make_default,
        "upload_dir": upload_dir,
    }


def score_job_params(
    inputs: list[dict[str, str]], batch_id: int, *, upload_dir: str | None = None
) -> dict[str, Any]:
    """Build the parameters of a scoring job for an existing batch."""
    return {"inputs": list(inputs), "batch_id": batch_id, "upload_dir": upload_dir}


def compare_job_params(
    dataset: str, out_dir: str, *, settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the parameters of a comparative study; ``out_dir`` is relative to DAVAE_HOME.

    ``settings`` may contain ``quick``, ``epochs``, ``seeds``,
    ``labelled_defects``, ``ablation`` and ``imbalance``, as the
    ``compare`` command's options.
    """
    return {"mode": "compare", "dataset": dataset, "out_dir": out_dir, **dict(settings or {})}


def model_evaluation_params(dataset: str, model_version_id: int) -> dict[str, Any]:
    """Build the parameters of a job that measures one model version on a dataset."""
    return {"mode": "model", "dataset": dataset, "model_version_id": model_version_id}


def new_study_dir(label: str) -> str:
    """Return a new study folder, relative to DAVAE_HOME: ``studies/<label>-<UTC time>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)[:60] or "study"
    return f"{STUDIES_DIR}/{safe}-{stamp}"


def new_upload_dir() -> str:
    """Return a new folder for one job's uploads, relative to DAVAE_HOME."""
    return f"{UPLOADS_DIR}/{uuid.uuid4().hex}"


def iter_job_inputs(entries: Iterable[Mapping[str, str]], home: Path) -> Iterator[str | Upload]:
    """Turn job input entries into ``davae.inputs.iter_inputs`` inputs, reading uploads lazily.

    An uploaded file is read only when its turn comes, and keeps the name it
    had in the browser. A saved upload that has gone missing becomes its path,
    which ``iter_inputs`` reports as ``input_not_found``.
    """
    for entry in entries:
        if "upload" in entry:
            path = home / PurePosixPath(entry["upload"])
            try:
                yield Upload(entry["name"], path.read_bytes())
            except FileNotFoundError:
                yield str(path)
        else:
            yield entry["path"]


# -- display files -------------------------------------------------------------


class DisplayFiles(NamedTuple):
    """Paths (relative to DAVAE_HOME) of what the gallery and the export show for one image."""

    overlay: str  # PNG: heatmap over the original, longest side display_max_side
    reconstruction: str  # PNG: the model's reconstruction at the original's aspect ratio
    error_map: str  # .npy float16: the smoothed squared error in model-input pixels


def display_files(heatmap_path: str) -> DisplayFiles:
    """Return an image's display files from its ``scores.heatmap_path``."""
    stem = heatmap_path.removesuffix(".png")
    return DisplayFiles(heatmap_path, f"{stem}.recon.png", f"{stem}.error.npy")


def json_safe(value: Any) -> Any:
    """Convert a value for a JSON column: NaN and infinity to None, numpy scalars to Python."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _display_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    factor = min(1.0, max_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def write_display_files(
    storage: Storage,
    model_version_id: int,
    image_sha256: str,
    pixels: np.ndarray,
    analysis: Any,
    heatmap_scale: Any,
    max_side: int,
) -> str:
    """Write one scored image's display files and return its heatmap path.

    Call it before the image's score is committed: readers look for the files
    of scored images only, so they never find one missing.
    """
    from davae.heatmap import overlay
    from davae.imageio import to_uint8_image
    from storage.files import write_atomic

    overlay_image = overlay(pixels, analysis.error_map, heatmap_scale, max_side=max_side)
    heatmap_path = storage.files.store_heatmap(
        _png_bytes(overlay_image), model_version_id=model_version_id, image_sha256=image_sha256
    )
    paths = display_files(heatmap_path)

    size = _display_size(pixels.shape[1], pixels.shape[0], max_side)
    recon = to_uint8_image(analysis.reconstruction).resize(size, PILImage.Resampling.BILINEAR)
    write_atomic(storage.files.resolve(paths.reconstruction), _png_bytes(recon))

    error_buffer = io.BytesIO()
    np.save(error_buffer, np.asarray(analysis.error_map, dtype=np.float16))
    write_atomic(storage.files.resolve(paths.error_map), error_buffer.getvalue())
    return heatmap_path


def listed_file(item: Rejected | Ignored) -> dict[str, Any]:
    """Describe a rejected or ignored file for a job's progress and result."""
    if isinstance(item, Ignored):
        return {"name": item.name, "folder": item.folder, "reason": item.reason}
    return {
        "name": item.name,
        "folder": item.folder,
        "code": item.code,
        "message": item.message,
        "params": json_safe(item.params),
    }
