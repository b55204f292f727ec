"""Paths, generated images and database helpers shared by the dashboard tests.

A plain module rather than conftest.py, so test files can import it by name.
Images are generated with numpy and Pillow, so the tests need no data files.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from davae.config import DetectorConfig

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = ROOT / "app.py"
IMAGE_HEIGHT, IMAGE_WIDTH = 40, 48
REVIEWER = "tester"


def tiny_config(**changes: Any) -> DetectorConfig:
    """Return a detector configuration that trains in seconds: 32 px input, width 8, latent 8.

    Scoring keeps the library's default kind (multi-scale latent distance,
    per-pixel error normalisation) on the two encoder stages a depth of 2 has.
    """
    base = DetectorConfig().replace(
        vae__image_size=32,
        vae__width=8,
        vae__latent_dim=8,
        vae__depth=2,
        scoring__multiscale_stages=(0, 1),
        scoring__multiscale_grid=8,
        train__epochs=2,
        train__batch_size=8,
        augment__iterations=1,
        scoring__batch_size=8,
    )
    return base.replace(**changes) if changes else base


def normal_pixels(rng: np.random.Generator) -> np.ndarray:
    """Generate a smooth sinusoidal texture with mild noise, (H, W) uint8."""
    yy, xx = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH] / max(IMAGE_HEIGHT, IMAGE_WIDTH)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * rng.uniform(1, 2) + yy * rng.uniform(0, 1)) + phase)
    pixels = 0.4 + 0.2 * wave + 0.03 * rng.standard_normal((IMAGE_HEIGHT, IMAGE_WIDTH))
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def defect_pixels(rng: np.random.Generator) -> np.ndarray:
    """Generate a normal texture with a white square pasted in, an obvious defect."""
    pixels = normal_pixels(rng)
    top, left = int(rng.integers(2, 20)), int(rng.integers(2, 28))
    pixels[top : top + 12, left : left + 12] = 255
    return pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, seed: int = 0, *, defects: bool = False) -> list[Path]:
    """Write ``count`` generated PNG images into ``folder``; return their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = defect_pixels(rng) if defects else normal_pixels(rng)
        path = folder / f"{index:03d}.png"
        path.write_bytes(png_bytes(pixels))
        paths.append(path)
    return paths


def write_mvtec(root: Path, seed: int = 7) -> Path:
    """Write a small dataset in MVTec layout: 16 train normals, 6 test normals, 2 defect classes."""
    write_images(root / "train" / "good", 16, seed)
    write_images(root / "test" / "good", 6, seed + 1)
    write_images(root / "test" / "square", 4, seed + 2, defects=True)
    write_images(root / "test" / "spot", 4, seed + 3, defects=True)
    return root


def wait_for(condition: Callable[[], Any], timeout_s: float = 120.0, every_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


# -- reading what a page shows -------------------------------------------------

# Element types whose ``value`` is text a user reads.
_TEXT_ELEMENTS = {
    "title",
    "header",
    "subheader",
    "markdown",
    "caption",
    "text",
    "info",
    "warning",
    "error",
    "success",
    "toast",
}
# Widget attributes that hold user-facing text.
_WIDGET_TEXT = ("label", "help", "placeholder")


def _plotly_texts(spec: dict[str, Any]) -> list[str]:
    layout = spec.get("layout", {})
    texts = [trace.get("name") for trace in spec.get("data", [])]
    texts.append((layout.get("title") or {}).get("text"))
    for name, axis in layout.items():
        if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict):
            texts.append((axis.get("title") or {}).get("text"))
    texts += [annotation.get("text") for annotation in layout.get("annotations", [])]
    return [text for text in texts if text]


def visible_texts(node: Any) -> list[str]:
    """Collect the text a user reads in an AppTest tree: headings, messages, labels, help,
    options, table headers, metric labels and chart titles, axes and legends.

    Cell values of tables and the raw configuration shown with ``st.json`` are
    data, not page text, and are left out.
    """
    import json

    texts: list[str] = []
    kind = getattr(node, "type", "")
    if kind in _TEXT_ELEMENTS:
        texts.append(str(node.value))
    elif kind == "dataframe":
        texts += [str(column) for column in node.value.columns]
    elif kind == "plotly_chart":
        texts += _plotly_texts(json.loads(node.proto.spec))
    elif kind in ("metric", "expander", "tab", "button", "download_button", "page_link"):
        texts.append(str(getattr(node, "label", "") or node.proto.label))
    elif kind not in ("json", "code"):
        for attribute in _WIDGET_TEXT:
            value = getattr(node, attribute, None)
            if isinstance(value, str) and value:
                texts.append(value)
        options = getattr(node, "options", None)
        if options:
            texts += [str(option) for option in options]
    if kind == "button_group":
        texts += [option.content for option in node.proto.options]
    for child in (getattr(node, "children", None) or {}).values():
        texts += visible_texts(child)
    return texts


# Words that stay in English in the Korean catalog: field names, formats, units,
# the product name, and each language's own name in the language selector.
ALLOWED_WORDS = {
    "CPU",
    "GPU",
    "AUROC",
    "AUPR",
    "ROC",
    "FPR",
    "F1",
    "VAE",
    "DA",
    "ELBO",
    "Mahalanobis",
    "SVM",
    "PCA",
    "CSV",
    "ZIP",
    "PNG",
    "JPEG",
    "BMP",
    "TIFF",
    "RGB",
    "MVTec",
    "UTC",
    "ID",
    "KB",
    "MB",
    "GB",
    "px",
    "K",
    "Inspector",
    "English",
    # Export values and files that stay the same in every language.
    "UTF",
    "BOM",
    "normal",
    "anomalous",
    "rejected",
    "manifest",
    "json",
}


def english_words(text: str, data: Iterable[str] = ()) -> list[str]:
    """Return the English words in ``text`` that are neither allowed terms nor data.

    ``data`` lists values the page shows from the database or the file system
    (file names, model names, paths); they are removed first. Words in paths
    (anything with a slash) are taken as folder names.
    """
    import re

    for value in sorted(data, key=len, reverse=True):
        text = text.replace(value, " ")
    words = []
    for token in text.split():
        if "/" in token or "\\" in token:
            continue
        words += re.findall(r"[A-Za-z]{2,}", token)
    return [word for word in words if word not in ALLOWED_WORDS]


def wait_for_job(storage: Any, job_id: int, timeout_s: float = 300.0) -> Any:
    """Wait until a job has finished (done, failed or cancelled) and return it."""
    from storage import jobs

    def finished() -> Any:
        with storage.database.read() as session:
            job = jobs.get_job(session, job_id)
        return job if job.status.value in ("done", "failed", "cancelled") else None

    return wait_for(finished, timeout_s)


def newest_job_id(storage: Any) -> int:
    from storage import jobs

    with storage.database.read() as session:
        return jobs.list_recent_jobs(session, limit=1)[0].id


def all_text(at: Any) -> str:
    return "\n".join(visible_texts(at.main) + visible_texts(at.sidebar))
