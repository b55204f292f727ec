"""Collect image files from paths, folders, ZIP archives and in-memory uploads.

Everything found is reported: an image becomes an :class:`InputFile`, a file
that cannot be used a :class:`Rejected` with the reason, and system clutter
(``__MACOSX/``, ``._*`` AppleDouble files, dotfiles) an :class:`Ignored`. No
file disappears without a record.

ZIP archives are checked before anything is extracted: member count and total
uncompressed size against :class:`~davae.config.InputLimits`, and each member
name for absolute paths and ``..``. Members keep their folder path, so
``lineA/img_001.png`` and ``lineB/img_001.png`` stay two images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from davae.config import InputLimits
from davae.errors import DavaeError
from davae.imageio import SUPPORTED_EXTENSIONS, has_supported_extension

logger = logging.getLogger(__name__)

_ZIP_UTF8_FLAG = 0x800
_ZIP_ENCRYPTED_FLAG = 0x1
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Upload:
    """A file received in memory, such as a browser upload."""

    name: str
    data: bytes


@dataclass(frozen=True)
class InputFile:
    """One candidate image: its name, folder inside the upload, and its bytes."""

    name: str
    folder: str  # POSIX path inside the upload or archive; "" at the top level
    data: bytes = field(repr=False)
    source: str = ""  # the archive, folder or file it came from

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Rejected:
    """A file that cannot be used, with a stable error code and an English message."""

    name: str
    folder: str
    code: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @classmethod
    def from_error(cls, error: DavaeError, name: str, folder: str, source: str = "") -> Rejected:
        return cls(name, folder, error.code, error.message, dict(error.params), source)


@dataclass(frozen=True)
class Ignored:
    """System clutter passed over on purpose, listed so nothing vanishes silently."""

    name: str
    folder: str
    reason: str
    source: str = ""

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name


InputItem = InputFile | Rejected | Ignored


def iter_inputs(
    inputs: Iterable[str | os.PathLike[str] | Upload], limits: InputLimits | None = None
) -> Iterator[InputItem]:
    """Yield every file found in ``inputs`` as an InputFile, Rejected or Ignored.

    Each input is a file path, a folder (searched recursively, in sorted
    order), a ZIP archive path, or an :class:`Upload`. File bytes are read
    lazily, one file at a time.
    """
    limits = limits or InputLimits()
    for item in inputs:
        if isinstance(item, Upload):
            yield from _iter_upload(item, limits)
            continue
        path = Path(item)
        if path.is_dir():
            yield from _iter_folder(path, limits)
        elif path.is_file():
            yield from _iter_path(path, path.name, "", str(path), limits)
        else:
            error = DavaeError("input_not_found", f"{path}: no such file or folder", name=str(path))
            yield Rejected.from_error(error, path.name, "", str(path))


def _iter_upload(upload: Upload, limits: InputLimits) -> Iterator[InputItem]:
    name = PurePosixPath(upload.name.replace("\\", "/")).name
    if name.lower().endswith(".zip"):
        yield from _iter_zip_bytes(upload.data, name, limits)
        return
    rejection = _check_file(name, "", len(upload.data), limits, upload.name)
    if rejection is not None:
        yield rejection
    else:
        yield InputFile(name, "", upload.data, upload.name)


def _iter_folder(root: Path, limits: InputLimits) -> Iterator[InputItem]:
    for directory, subdirs, files in os.walk(root):
        relative = Path(directory).relative_to(root).as_posix()
        folder = "" if relative == "." else relative
        for hidden in sorted(d for d in subdirs if d.startswith(".") or d == "__MACOSX"):
            yield Ignored(hidden + "/", folder, "hidden or system folder", str(root))
        subdirs[:] = sorted(d for d in subdirs if not (d.startswith(".") or d == "__MACOSX"))
        for name in sorted(files):
            yield from _iter_path(Path(directory) / name, name, folder, str(root), limits)


def _iter_path(
    path: Path, name: str, folder: str, source: str, limits: InputLimits
) -> Iterator[InputItem]:
    if name.startswith("."):
        yield Ignored(name, folder, _hidden_reason(name), source)
        return
    if name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as archive:
                # The archive's own path is the source, so members of two
                # archives with the same name in different folders stay apart.
                yield from _iter_zip(archive, name, limits, str(path))
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            yield _zip_invalid(name, folder, exc, source)
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        yield _unreadable(name, folder, exc, source)
        return
    rejection = _check_file(name, folder, size, limits, source)
    if rejection is not None:
        yield rejection
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield _unreadable(name, folder, exc, source)
        return
    yield InputFile(name, folder, data, source)


def _iter_zip_bytes(data: bytes, name: str, limits: InputLimits) -> Iterator[InputItem]:
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            yield from _iter_zip(archive, name, limits, name)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        yield _zip_invalid(name, "", exc, name)


def _iter_zip(
    archive: zipfile.ZipFile, archive_name: str, limits: InputLimits, source: str
) -> Iterator[InputItem]:
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) > limits.zip_max_members:
        error = DavaeError(
            "zip_too_many_members",
            f"{archive_name}: {len(members):,} files in the archive is over the limit of "
            f"{limits.zip_max_members:,}; split it into smaller archives",
            name=archive_name,
            count=len(members),
            limit=limits.zip_max_members,
        )
        yield Rejected.from_error(error, archive_name, "", source)
        return
    total = sum(info.file_size for info in members)
    if total > limits.zip_max_total_bytes:
        error = DavaeError(
            "zip_too_large",
            f"{archive_name}: {total:,} bytes uncompressed is over the limit of "
            f"{limits.zip_max_total_bytes:,} bytes; split it into smaller archives",
            name=archive_name,
            size_bytes=total,
            limit_bytes=limits.zip_max_total_bytes,
        )
        yield Rejected.from_error(error, archive_name, "", source)
        return

    for info in members:
        member_name = decode_member_name(info)
        yield from _iter_zip_member(archive, info, member_name, archive_name, limits, source)


def _iter_zip_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member_name: str,
    archive_name: str,
    limits: InputLimits,
    source: str,
) -> Iterator[InputItem]:
    path = member_name.replace("\\", "/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    name = parts[-1] if parts else path
    folder = "/".join(parts[:-1])
    if path.startswith("/") or _WINDOWS_DRIVE.match(path) or ".." in parts:
        error = DavaeError(
            "zip_unsafe_path",
            f"{archive_name}: member {member_name!r} has an absolute path or '..' and was not "
            "extracted",
            name=member_name,
        )
        yield Rejected.from_error(error, name, folder, source)
        return
    if parts and parts[0] == "__MACOSX":
        yield Ignored(name, folder, "macOS resource fork (__MACOSX)", source)
        return
    hidden = next((p for p in parts if p.startswith(".")), None)
    if hidden is not None:
        yield Ignored(name, folder, _hidden_reason(hidden), source)
        return
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
        error = DavaeError(
            "zip_encrypted",
            f"{path}: the member is password-protected; add it without encryption",
            name=path,
        )
        yield Rejected.from_error(error, name, folder, source)
        return
    if name.lower().endswith(".zip"):
        error = DavaeError(
            "unsupported_type",
            f"{path}: archives inside archives are not opened; extract it and upload it on its own",
            name=path,
            extension=".zip",
            supported=", ".join(SUPPORTED_EXTENSIONS),
        )
        yield Rejected.from_error(error, name, folder, source)
        return
    rejection = _check_file(name, folder, info.file_size, limits, source)
    if rejection is not None:
        yield rejection
        return
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        # A damaged member (bad CRC, unknown compression) loses only itself.
        yield _zip_invalid(name, folder, exc, source)
        return
    yield InputFile(name, folder, data, source)


def decode_member_name(info: zipfile.ZipInfo) -> str:
    """Recover a member name that was not stored as flagged UTF-8.

    Without the UTF-8 flag, Python decodes names as CP437. Many tools write
    UTF-8 anyway, and Korean Windows writes CP949, so both are tried on the
    original bytes before the CP437 reading is kept. This never raises.
    """
    if info.flag_bits & _ZIP_UTF8_FLAG:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for encoding in ("utf-8", "cp949"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename


def _check_file(
    name: str, folder: str, size: int, limits: InputLimits, source: str
) -> Rejected | None:
    if not has_supported_extension(name):
        extension = PurePosixPath(name).suffix or "(none)"
        error = DavaeError(
            "unsupported_type",
            f"{name}: files of type {extension} are not supported; "
            f"use {', '.join(SUPPORTED_EXTENSIONS)}",
            name=name,
            extension=extension,
            supported=", ".join(SUPPORTED_EXTENSIONS),
        )
        return Rejected.from_error(error, name, folder, source)
    if size == 0:
        error = DavaeError("empty_file", f"{name}: the file is empty (0 bytes)", name=name)
        return Rejected.from_error(error, name, folder, source)
    if size > limits.max_file_bytes:
        error = DavaeError(
            "file_too_large",
            f"{name}: {size:,} bytes is over the limit of {limits.max_file_bytes:,} bytes",
            name=name,
            size_bytes=size,
            limit_bytes=limits.max_file_bytes,
        )
        return Rejected.from_error(error, name, folder, source)
    return None


def _hidden_reason(name: str) -> str:
    if name.startswith("._"):
        return "macOS AppleDouble metadata file"
    return "hidden file or folder"


def _zip_invalid(name: str, folder: str, exc: BaseException, source: str) -> Rejected:
    error = DavaeError(
        "zip_invalid",
        f"{name}: the ZIP archive or member is damaged or unreadable ({exc})",
        name=name,
        detail=str(exc),
    )
    logger.warning("rejected %s: %s", name, exc)
    return Rejected.from_error(error, name, folder, source)


def _unreadable(name: str, folder: str, exc: BaseException, source: str) -> Rejected:
    error = DavaeError(
        "unreadable_file", f"{name}: the file could not be read ({exc})", name=name, detail=str(exc)
    )
    logger.warning("rejected %s: %s", name, exc)
    return Rejected.from_error(error, name, folder, source)
