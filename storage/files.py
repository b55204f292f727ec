"""Files under the data directory: originals, heatmaps and model bundles.

Layout below ``DAVAE_HOME``::

    originals/<sha[:2]>/<sha>.<ext>                  each distinct upload, once
    heatmaps/<model_version_id>/<sha[:2]>/<sha>.png  per original and model
    models/<sha[:2]>/<sha>.pt                        model bundles

Every file is written to a temporary file in the target folder, flushed to
disk and renamed into place, so a reader never reads half a file, and a
crash never leaves one.
The database stores paths relative to ``DAVAE_HOME`` with forward slashes,
so the whole folder can be moved or mounted elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from davae.errors import DavaeError, invalid_setting

logger = logging.getLogger(__name__)

ORIGINALS_DIR = "originals"
HEATMAPS_DIR = "heatmaps"
MODELS_DIR = "models"

_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COPY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    """A file in the store: where it is, its digest and size."""

    relative_path: str  # POSIX path relative to DAVAE_HOME
    sha256: str
    size_bytes: int
    created: bool  # False when identical content was already stored


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    _replace_atomic(path, lambda stream: stream.write(data))


def _replace_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Syncing the folder makes the rename itself durable. Windows cannot open a
    # folder this way, so there the rename is only as durable as the OS makes it.
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def normalize_extension(extension: str) -> str:
    """Return ``extension`` lowercased without its dot; raise if it is not 1-10 letters/digits."""
    normalized = extension.lower().lstrip(".")
    if not _EXTENSION.match(normalized):
        raise invalid_setting("file extension", extension, "1 to 10 letters or digits")
    return normalized


def _check_sha256(digest: str) -> str:
    if not _SHA256.match(digest):
        raise invalid_setting("sha256", digest, "64 lowercase hexadecimal digits")
    return digest


class FileStore:
    """Content-addressed files below one data directory."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).expanduser().absolute()

    def resolve(self, relative_path: str) -> Path:
        """Return the absolute path of a stored file from its database path.

        Raises ValueError for a path that is absolute or leaves the data
        directory, which a correct database never contains.
        """
        posix = PurePosixPath(relative_path)
        if posix.is_absolute() or ".." in posix.parts or not posix.parts:
            raise ValueError(f"stored path {relative_path!r} must stay inside {self.home}")
        return self.home.joinpath(*posix.parts)

    def read_bytes(self, relative_path: str) -> bytes:
        """Return a stored file's content; raise ``stored_file_missing`` if it is missing."""
        path = self.resolve(relative_path)
        try:
            return path.read_bytes()
        except FileNotFoundError as error:
            raise DavaeError(
                "stored_file_missing",
                f"the stored file {relative_path} is missing from {self.home}; "
                "restore the data directory from a backup or score the images again",
                path=relative_path,
            ) from error

    def store_original(self, data: bytes, extension: str) -> StoredFile:
        """Store an uploaded file under its SHA-256 unless identical content is there."""
        digest = sha256_hex(data)
        relative = f"{ORIGINALS_DIR}/{digest[:2]}/{digest}.{normalize_extension(extension)}"
        return self._store_bytes(relative, digest, data)

    def store_heatmap(self, data: bytes, *, model_version_id: int, image_sha256: str) -> str:
        """Store a PNG heatmap for one original and model; return its relative path.

        The path depends only on the original's digest and the model, so
        scoring the same image again with the same model reuses the file.
        """
        digest = _check_sha256(image_sha256)
        relative = f"{HEATMAPS_DIR}/{int(model_version_id)}/{digest[:2]}/{digest}.png"
        path = self.resolve(relative)
        write_atomic(path, data)
        return relative

    def store_model_bundle(self, source: Path) -> StoredFile:
        """Copy a saved model bundle into the store, named by its SHA-256."""
        digest, size = _digest_file(Path(source))
        relative = f"{MODELS_DIR}/{digest[:2]}/{digest}.pt"
        target = self.resolve(relative)
        if _same_size(target, size):
            return StoredFile(relative, digest, size, created=False)
        with open(source, "rb") as stream:
            _replace_atomic(target, lambda out: shutil.copyfileobj(stream, out, _COPY_CHUNK_BYTES))
        logger.info("stored model bundle %s (%d bytes)", relative, size)
        return StoredFile(relative, digest, size, created=True)

    def _store_bytes(self, relative: str, digest: str, data: bytes) -> StoredFile:
        path = self.resolve(relative)
        if _same_size(path, len(data)):
            return StoredFile(relative, digest, len(data), created=False)
        write_atomic(path, data)
        return StoredFile(relative, digest, len(data), created=True)


def _same_size(path: Path, size: int) -> bool:
    # Every write is atomic, so a file named by its digest with the right size
    # contains that content. A different size means damage, and the file is rewritten.
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _digest_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_COPY_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
