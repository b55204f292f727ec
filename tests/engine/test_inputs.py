"""Collecting inputs: folders, files, uploads and ZIP archives, with every outcome recorded."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from engine_images import (
    ZOO_GOOD,
    ZOO_IGNORED,
    ZOO_MAX_PIXELS,
    ZOO_REJECTED,
    encode,
    normal_image,
    to_uint8,
    zip_bytes,
    zip_with_raw_name,
)
from PIL import Image

from davae.config import InputLimits
from davae.dataset import load_images
from davae.inputs import Ignored, InputFile, Rejected, Upload, decode_member_name, iter_inputs

KOREAN_NAME = "검사_001.png"  # "inspection_001.png"


def by_kind(items):
    files = {i.relative_path: i for i in items if isinstance(i, InputFile)}
    rejected = {i.relative_path: i for i in items if isinstance(i, Rejected)}
    ignored = {i.relative_path: i for i in items if isinstance(i, Ignored)}
    return files, rejected, ignored


@pytest.fixture
def image_bytes() -> bytes:
    pixels = normal_image(np.random.default_rng(4), 20, 24)
    return encode(Image.fromarray(to_uint8(pixels)), "PNG")


def test_folder_lists_every_file(input_zoo):
    files, rejected, ignored = by_kind(list(iter_inputs([input_zoo])))

    # Listing checks names and sizes only; content problems show when decoding.
    listed_only = {"empty.png", "notes.txt", "animation.gif"}
    assert sorted(files) == sorted([*ZOO_GOOD, *(set(ZOO_REJECTED) - listed_only)])
    assert {path: r.code for path, r in rejected.items()} == {
        path: ZOO_REJECTED[path] for path in listed_only
    }
    assert sorted(ignored) == sorted(ZOO_IGNORED)


def test_folder_is_searched_in_sorted_order(input_zoo):
    paths = [i.relative_path for i in iter_inputs([input_zoo]) if isinstance(i, InputFile)]
    top_level = [p for p in paths if "/" not in p]

    assert top_level == sorted(top_level)
    assert paths.index("lineA/img_001.png") < paths.index("lineB/img_001.png")


def test_same_name_in_two_folders_stays_two(input_zoo):
    files, _, _ = by_kind(list(iter_inputs([input_zoo])))

    first, second = files["lineA/img_001.png"], files["lineB/img_001.png"]
    assert first.name == second.name == "img_001.png"
    assert (first.folder, second.folder) == ("lineA", "lineB")
    assert first.sha256 != second.sha256


def test_ignored_reasons_name_the_clutter(input_zoo):
    _, _, ignored = by_kind(list(iter_inputs([input_zoo])))

    assert "AppleDouble" in ignored["._a_gray.png"].reason
    assert "hidden" in ignored[".DS_Store"].reason
    assert "hidden" in ignored[".cache/"].reason


def test_load_images_decodes_or_rejects_each_file(input_zoo):
    loaded = load_images([input_zoo], channels=1, limits=InputLimits(max_pixels=ZOO_MAX_PIXELS))

    assert sorted(loaded.names) == sorted(ZOO_GOOD)
    assert {r.relative_path: r.code for r in loaded.rejected} == ZOO_REJECTED
    for rejected in loaded.rejected:
        assert rejected.name in rejected.message
    assert len(loaded.ignored) == len(ZOO_IGNORED)
    for pixels in loaded.pixels:
        assert pixels.ndim == 3
        assert pixels.shape[2] == 1
        assert np.isfinite(pixels).all()


def test_load_images_converts_to_three_channels(input_zoo):
    loaded = load_images([input_zoo / "a_gray.png", input_zoo / "d_rgba.png"], channels=3)

    assert [p.shape[2] for p in loaded.pixels] == [3, 3]


def test_fingerprint_ignores_order_and_names(tmp_path, image_bytes):
    other = encode(Image.new("L", (20, 24), 90), "PNG")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(image_bytes)
    (tmp_path / "one" / "b.png").write_bytes(other)
    (tmp_path / "two" / "z.png").write_bytes(other)
    (tmp_path / "two" / "y.png").write_bytes(image_bytes)

    first = load_images([tmp_path / "one"], 1).fingerprint()
    second = load_images([tmp_path / "two"], 1).fingerprint()
    changed = load_images([tmp_path / "one" / "a.png"], 1).fingerprint()

    assert first == second
    assert first["image_count"] == 2
    assert changed["content_sha256"] != first["content_sha256"]


def test_single_file_path(input_zoo):
    items = list(iter_inputs([input_zoo / "b_rgb.JPG"]))

    assert len(items) == 1
    assert isinstance(items[0], InputFile)
    assert items[0].folder == ""
    assert items[0].data == (input_zoo / "b_rgb.JPG").read_bytes()


def test_missing_path_rejected(tmp_path):
    items = list(iter_inputs([tmp_path / "nowhere"]))

    assert len(items) == 1
    assert items[0].code == "input_not_found"
    assert "nowhere" in items[0].message


def test_file_over_size_limit_rejected(tmp_path, image_bytes):
    (tmp_path / "large.png").write_bytes(image_bytes)
    items = list(iter_inputs([tmp_path], InputLimits(max_file_bytes=len(image_bytes) - 1)))

    assert [i.code for i in items] == ["file_too_large"]
    assert items[0].params["size_bytes"] == len(image_bytes)


def test_upload_of_image(image_bytes):
    items = list(iter_inputs([Upload("Camera/IMG_7.PNG", image_bytes)]))

    assert len(items) == 1
    assert isinstance(items[0], InputFile)
    assert items[0].name == "IMG_7.PNG"
    assert items[0].data == image_bytes


def test_empty_and_unsupported_uploads_rejected():
    items = list(iter_inputs([Upload("blank.jpg", b""), Upload("scan.webp", b"RIFF")]))

    assert [i.code for i in items] == ["empty_file", "unsupported_type"]
    assert items[1].params["extension"] == ".webp"


def test_zip_upload_keeps_folders(image_bytes):
    archive = zip_bytes({"lineA/img_001.png": image_bytes, "lineB/img_001.png": image_bytes})
    items = list(iter_inputs([Upload("batch.ZIP", archive)]))

    assert [i.relative_path for i in items] == ["lineA/img_001.png", "lineB/img_001.png"]
    assert all(isinstance(i, InputFile) for i in items)
    assert all(i.source == "batch.ZIP" for i in items)


def test_zip_clutter_ignored(image_bytes):
    archive = zip_bytes(
        {
            "parts/a.png": image_bytes,
            "__MACOSX/parts/._a.png": b"\x00\x05\x16\x07",
            "parts/._a.png": b"\x00\x05\x16\x07",
            "parts/.DS_Store": b"Bud1",
            ".git/objects/x.png": image_bytes,
        }
    )
    files, rejected, ignored = by_kind(list(iter_inputs([Upload("b.zip", archive)])))

    assert list(files) == ["parts/a.png"]
    assert rejected == {}
    assert "__MACOSX" in ignored["__MACOSX/parts/._a.png"].reason
    assert "AppleDouble" in ignored["parts/._a.png"].reason
    assert "hidden" in ignored["parts/.DS_Store"].reason
    assert "hidden" in ignored[".git/objects/x.png"].reason


@pytest.mark.parametrize("unsafe", ["../evil.png", "parts/../../evil.png", "/abs.png", "C:/x.png"])
def test_zip_unsafe_member_rejected(unsafe, image_bytes):
    archive = zip_bytes({unsafe: image_bytes, "good.png": image_bytes})
    items = list(iter_inputs([Upload("b.zip", archive)]))

    assert [type(i).__name__ for i in items] == ["Rejected", "InputFile"]
    assert items[0].code == "zip_unsafe_path"
    assert items[0].params["name"] == unsafe
    assert items[1].relative_path == "good.png"


def test_zip_cp949_member_name_decoded(image_bytes):
    archive = zip_with_raw_name(f"lineA/{KOREAN_NAME}".encode("cp949"), image_bytes)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        (info,) = opened.infolist()
    items = list(iter_inputs([Upload("korean.zip", archive)]))

    assert not info.flag_bits & 0x800
    assert decode_member_name(info) == f"lineA/{KOREAN_NAME}"
    assert len(items) == 1
    assert items[0].name == KOREAN_NAME
    assert items[0].folder == "lineA"
    assert items[0].data == image_bytes


def test_zip_unflagged_utf8_name_decoded(image_bytes):
    archive = zip_with_raw_name(KOREAN_NAME.encode("utf-8"), image_bytes)
    items = list(iter_inputs([Upload("utf8.zip", archive)]))

    assert items[0].name == KOREAN_NAME


def test_zip_undecodable_name_does_not_crash(image_bytes):
    archive = zip_with_raw_name(b"\xff\xfe\x80\x81.png", image_bytes)
    items = list(iter_inputs([Upload("odd.zip", archive)]))

    assert len(items) == 1
    assert isinstance(items[0], InputFile)
    assert items[0].name.endswith(".png")
    assert items[0].data == image_bytes


def test_zip_flagged_utf8_name_kept(image_bytes):
    items = list(iter_inputs([Upload("u.zip", zip_bytes({KOREAN_NAME: image_bytes}))]))

    assert items[0].name == KOREAN_NAME


def test_zip_too_many_members_rejected_whole(image_bytes):
    members = {f"img_{i}.png": image_bytes for i in range(4)}
    members["img_0.png"] = b"damaged"  # would be rejected if members were decoded
    items = list(
        iter_inputs([Upload("many.zip", zip_bytes(members))], InputLimits(zip_max_members=3))
    )

    assert len(items) == 1
    assert items[0].code == "zip_too_many_members"
    assert items[0].params["count"] == 4
    assert items[0].params["limit"] == 3


def test_zip_member_limit_allows_exact_count(image_bytes):
    members = {f"img_{i}.png": image_bytes for i in range(3)}
    items = list(
        iter_inputs([Upload("ok.zip", zip_bytes(members))], InputLimits(zip_max_members=3))
    )

    assert len(items) == 3


def test_zip_too_large_rejected_before_extracting(image_bytes):
    # Deflate shrinks these zeros a thousandfold: the limit is on uncompressed bytes.
    members = {"a.png": image_bytes, "zeros.png": bytes(2_000_000)}
    archive = zip_bytes(members, zipfile.ZIP_DEFLATED)
    limits = InputLimits(zip_max_total_bytes=1_000_000)
    items = list(iter_inputs([Upload("bomb.zip", archive)], limits))

    assert len(archive) < 100_000
    assert len(items) == 1
    assert items[0].code == "zip_too_large"
    assert items[0].params["size_bytes"] == 2_000_000 + len(image_bytes)


def test_zip_damaged_member_loses_only_itself(image_bytes):
    archive = bytearray(zip_bytes({"a.png": image_bytes, "b.png": image_bytes}))
    # Flip one byte inside b.png's stored data, so its CRC no longer matches.
    second = archive.rfind(b"b.png", 0, archive.find(b"PK\x01\x02"))
    archive[second + len("b.png") + 100] ^= 0xFF
    items = list(iter_inputs([Upload("damaged.zip", bytes(archive))]))

    assert isinstance(items[0], InputFile)
    assert items[0].data == image_bytes
    assert items[1].code == "zip_invalid"
    assert items[1].name == "b.png"


def test_zip_encrypted_member_rejected(image_bytes):
    # zipfile cannot encrypt, so set the "encrypted" bit of the general-purpose
    # flags by hand: offset 6 of the local header, offset 8 of the central one.
    archive = bytearray(zip_bytes({"secret.png": image_bytes, "open.png": image_bytes}))
    local = archive.find(b"PK\x03\x04")
    central = archive.find(b"PK\x01\x02")
    archive[local + 6] |= 0x1
    archive[central + 8] |= 0x1
    items = list(iter_inputs([Upload("locked.zip", bytes(archive))]))

    assert items[0].code == "zip_encrypted"
    assert items[0].name == "secret.png"
    assert isinstance(items[1], InputFile)


def test_zip_inside_zip_rejected(image_bytes):
    inner = zip_bytes({"a.png": image_bytes})
    items = list(iter_inputs([Upload("outer.zip", zip_bytes({"inner.zip": inner}))]))

    assert [i.code for i in items] == ["unsupported_type"]


def test_zip_member_checks_match_files(image_bytes):
    archive = zip_bytes({"empty.png": b"", "readme.txt": b"hi", "big.png": image_bytes})
    limits = InputLimits(max_file_bytes=len(image_bytes) - 1)
    items = list(iter_inputs([Upload("mixed.zip", archive)], limits))

    assert [i.code for i in items] == ["empty_file", "unsupported_type", "file_too_large"]


def test_not_a_zip_rejected(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 but not really a zip")
    on_disk = list(iter_inputs([tmp_path / "broken.zip"]))
    uploaded = list(iter_inputs([Upload("broken.zip", b"garbage")]))

    assert [i.code for i in on_disk] == ["zip_invalid"]
    assert [i.code for i in uploaded] == ["zip_invalid"]


def test_zip_in_folder_is_opened(tmp_path, image_bytes):
    (tmp_path / "batch.zip").write_bytes(zip_bytes({"x/a.png": image_bytes}))
    (tmp_path / "b.png").write_bytes(image_bytes)
    items = list(iter_inputs([tmp_path]))

    assert sorted(i.relative_path for i in items) == ["b.png", "x/a.png"]
    assert all(isinstance(i, InputFile) for i in items)


def test_same_archive_name_in_two_folders_stays_apart(tmp_path, image_bytes):
    for line in ("lineA", "lineB"):
        (tmp_path / line).mkdir()
        (tmp_path / line / "batch.zip").write_bytes(zip_bytes({"img.png": image_bytes}))
    items = list(iter_inputs([tmp_path]))

    assert [i.relative_path for i in items] == ["img.png", "img.png"]
    assert [i.source for i in items] == [
        str(tmp_path / "lineA" / "batch.zip"),
        str(tmp_path / "lineB" / "batch.zip"),
    ]


def test_load_images_decodes_zip_members(image_bytes):
    archive = zip_bytes(
        {"ok.png": image_bytes, "cut.png": image_bytes[: len(image_bytes) // 2], "t.png": b"text"}
    )
    loaded = load_images([Upload("b.zip", archive)], channels=1)

    assert loaded.names == ["ok.png"]
    assert [r.code for r in loaded.rejected] == ["truncated_image", "not_an_image"]
