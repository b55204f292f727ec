"""Loading training images, dataset fingerprints and the MVTec-style folder layout.

An MVTec-style dataset folder contains ``train/good/`` (normal images for
training), ``test/good/`` (normal test images), ``test/<defect>/`` for each
defect class, and optionally ``ground_truth/<defect>/<stem>_mask.png``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from davae.config import InputLimits
from davae.errors import DavaeError
from davae.imageio import decode_image, has_supported_extension
from davae.inputs import Ignored, InputFile, Rejected, Upload, iter_inputs

logger = logging.getLogger(__name__)


@dataclass
class LoadedImages:
    """Decoded images with their names, and every file that could not be used."""

    pixels: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)

    def fingerprint(self) -> dict[str, object]:
        """A summary identifying the image set, independent of file order and names."""
        digest = hashlib.sha256("".join(sorted(self.sha256)).encode()).hexdigest()
        heights = [p.shape[0] for p in self.pixels] or [0]
        widths = [p.shape[1] for p in self.pixels] or [0]
        return {
            "image_count": len(self.pixels),
            "content_sha256": digest,
            "rejected_count": len(self.rejected),
            "min_width": int(min(widths)),
            "max_width": int(max(widths)),
            "min_height": int(min(heights)),
            "max_height": int(max(heights)),
        }


def load_images(
    inputs: Iterable[str | os.PathLike[str] | Upload],
    channels: int,
    limits: InputLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadedImages:
    """Decode every image in ``inputs``; record the rest as rejected or ignored."""
    limits = limits or InputLimits()
    loaded = LoadedImages()
    for item in iter_inputs(inputs, limits):
        if isinstance(item, Ignored):
            loaded.ignored.append(item)
        elif isinstance(item, Rejected):
            loaded.rejected.append(item)
        else:
            _decode_into(item, channels, limits, loaded)
        if progress is not None:
            progress(len(loaded.pixels) + len(loaded.rejected))
    for rejected in loaded.rejected:
        logger.warning("rejected %s: %s", rejected.relative_path, rejected.message)
    return loaded


def _decode_into(item: InputFile, channels: int, limits: InputLimits, loaded: LoadedImages) -> None:
    try:
        decoded = decode_image(item.data, item.relative_path, channels, limits)
    except DavaeError as error:
        loaded.rejected.append(Rejected.from_error(error, item.name, item.folder, item.source))
        return
    loaded.pixels.append(decoded.pixels)
    loaded.names.append(item.relative_path)
    loaded.sha256.append(item.sha256)


@dataclass(frozen=True)
class TestImage:
    """One test image of an MVTec-style dataset."""

    path: Path
    defect: str  # "good" for normal images
    mask_path: Path | None

    @property
    def is_anomalous(self) -> bool:
        return self.defect != "good"


@dataclass(frozen=True)
class MVTecDataset:
    root: Path
    train_good: list[Path]
    test: list[TestImage]

    @property
    def defect_classes(self) -> list[str]:
        return sorted({t.defect for t in self.test if t.is_anomalous})


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and has_supported_extension(p.name) and not p.name.startswith(".")
    )


def open_mvtec(root: str | os.PathLike[str], require_train: bool = True) -> MVTecDataset:
    """Index an MVTec-style folder; raise DavaeError naming what is missing.

    With ``require_train=False`` (evaluation, which scores only ``test/``) a
    missing ``train/good`` gives an empty training list instead of an error.
    """
    root = Path(root)
    train_dir, test_dir = root / "train" / "good", root / "test"
    required_dirs = (train_dir, test_dir / "good") if require_train else (test_dir / "good",)
    for required in required_dirs:
        if not required.is_dir():
            raise DavaeError(
                "dataset_layout",
                f"{root}: expected the folder {required.relative_to(root)}/ "
                "(layout: train/good, test/good, test/<defect>)",
                path=str(root),
                detail=f"missing {required.relative_to(root)}",
            )
    test: list[TestImage] = []
    for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for path in _images_in(class_dir):
            mask = root / "ground_truth" / class_dir.name / f"{path.stem}_mask.png"
            test.append(TestImage(path, class_dir.name, mask if mask.is_file() else None))
    train = _images_in(train_dir) if train_dir.is_dir() else []
    if not train and require_train:
        raise DavaeError(
            "dataset_layout",
            f"{train_dir}: no images found",
            path=str(root),
            detail="train/good is empty",
        )
    if not any(t.is_anomalous for t in test):
        raise DavaeError(
            "dataset_layout",
            f"{test_dir}: no defect folders with images",
            path=str(root),
            detail="no test/<defect> images",
        )
    return MVTecDataset(root, train, test)
