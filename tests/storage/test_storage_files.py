"""The content-addressed file store under DAVAE_HOME."""

from __future__ import annotations

import hashlib
import os

import pytest

from davae.errors import DavaeError
from storage import files as files_module
from storage.files import FileStore, normalize_extension, write_atomic


@pytest.fixture
def store(tmp_path):
    return FileStore(tmp_path / "home")


def leftovers(folder):
    """Temporary files that an interrupted write would leave behind."""
    return [path for path in folder.rglob(".tmp-*")]


def test_original_stored_under_its_digest(store):
    data = b"\x89PNG fake image bytes"
    stored = store.store_original(data, ".PNG")
    digest = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == digest
    assert stored.relative_path == f"originals/{digest[:2]}/{digest}.png"
    assert stored.size_bytes == len(data)
    assert stored.created
    assert store.resolve(stored.relative_path).read_bytes() == data
    assert store.read_bytes(stored.relative_path) == data


def test_identical_content_stored_once(store):
    first = store.store_original(b"same bytes", "png")
    second = store.store_original(b"same bytes", "png")
    assert second.relative_path == first.relative_path
    assert not second.created
    assert len(list((store.home / "originals").rglob("*.png"))) == 1


def test_different_content_stored_apart(store):
    first = store.store_original(b"first", "png")
    second = store.store_original(b"second", "png")
    assert first.relative_path != second.relative_path


def test_damaged_copy_is_rewritten(store):
    stored = store.store_original(b"the real content", "tif")
    store.resolve(stored.relative_path).write_bytes(b"trunc")
    again = store.store_original(b"the real content", "tif")
    assert again.created
    assert store.read_bytes(stored.relative_path) == b"the real content"


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "folder" / "file.bin"
    write_atomic(target, b"old content")

    def failing_fsync(handle):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_atomic(target, b"new content that never lands")
    assert target.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_atomic_write_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    write_atomic(target, b"content")
    assert target.read_bytes() == b"content"
    assert leftovers(tmp_path) == []


def test_heatmap_path_per_model_and_image(store):
    digest = hashlib.sha256(b"original").hexdigest()
    path = store.store_heatmap(b"png bytes", model_version_id=3, image_sha256=digest)
    assert path == f"heatmaps/3/{digest[:2]}/{digest}.png"
    assert store.read_bytes(path) == b"png bytes"
    other = store.store_heatmap(b"png bytes 2", model_version_id=4, image_sha256=digest)
    assert other != path


def test_heatmap_rejects_bad_digest(store):
    with pytest.raises(DavaeError) as caught:
        store.store_heatmap(b"x", model_version_id=1, image_sha256="../../etc")
    assert caught.value.code == "invalid_setting"


def test_model_bundle_copied_by_digest(store, tmp_path):
    source = tmp_path / "trained.pt"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one copy chunk
    stored = store.store_model_bundle(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored.sha256 == digest
    assert stored.relative_path == f"models/{digest[:2]}/{digest}.pt"
    assert store.read_bytes(stored.relative_path) == source.read_bytes()
    assert not store.store_model_bundle(source).created


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.png", "originals/../../x", ""])
def test_resolve_rejects_paths_outside_home(store, path):
    with pytest.raises(ValueError):
        store.resolve(path)


def test_missing_file_reports_stored_file_missing(store):
    with pytest.raises(DavaeError) as caught:
        store.read_bytes("originals/ab/abcdef.png")
    assert caught.value.code == "stored_file_missing"
    assert caught.value.params == {"path": "originals/ab/abcdef.png"}


@pytest.mark.parametrize("extension", ["", ".", "p/ng", "..", "averyveryverylongext"])
def test_bad_extension_rejected(extension):
    with pytest.raises(DavaeError):
        normalize_extension(extension)
