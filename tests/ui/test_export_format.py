"""The export formats on their own: Excel-safe CSV cells, unique ZIP paths, the ZIP layout."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from davae import export
from storage.export import ExportRow
from storage.files import FileStore
from storage.models import ImageStatus, LabelValue

THRESHOLDS = {
    "recon": 0.5,
    "latent": 4.0,
    "recon_reduction": "max",
    "latent_metric": "mahalanobis",
    "review_low": None,
    "review_high": None,
}


def export_row(file_name: str, folder: str = "", **changes) -> ExportRow:
    values = {
        "file_name": file_name,
        "folder": folder,
        "sha256": "ab" * 32,
        "batch_id": 3,
        "batch_name": "lot 7",
        "model_name": "needles",
        "model_version": 2,
        "status": ImageStatus.SCORED,
        "rejection_code": None,
        "rejection_message": None,
        "recon_score": 0.25,
        "latent_euclidean": 1.5,
        "latent_mahalanobis": 2.0,
        "latent_multiscale": None,
        "combined_score": 9.9,
        "thresholds": THRESHOLDS,
        "auto_label": LabelValue.NORMAL,
        "human_label": None,
        "final_label": LabelValue.NORMAL,
        "reviewer": None,
        "reviewed_at": None,
        "stored_path": None,
        "heatmap_path": None,
    }
    values.update(changes)
    return ExportRow(**values)


@pytest.mark.parametrize("text", ["=cmd.png", "+x.png", "-x.png", "@x.png", "\tx.png", "\rx.png"])
def test_neutralize_formula_starts(text: str) -> None:
    assert export.neutralize(text) == "'" + text


@pytest.mark.parametrize("text", ["img.png", "불량_001.png", "naïve.png", "x=1.png", "'quoted"])
def test_neutralize_leaves_plain_text(text: str) -> None:
    assert export.neutralize(text) == text


def test_csv_numbers_stay_numbers() -> None:
    stream = io.BytesIO()
    record = {
        "file_name": "-x.png",
        "folder": "=lineA",
        "recon_score": -0.125,
        "latent_euclidean": -3e-07,
        "batch_id": 3,
        "reviewer": "@ana",
    }
    columns = ("file_name", "folder", "recon_score", "latent_euclidean", "batch_id", "reviewer")
    assert export.write_csv([record], stream, columns=columns) == 1
    text = stream.getvalue().decode("utf-8")
    assert text.splitlines()[1] == "'-x.png,'=lineA,-0.125,-3e-07,3,'@ana"
    row = next(csv.DictReader(io.StringIO(text)))
    assert float(row["recon_score"]) == -0.125
    assert float(row["latent_euclidean"]) == -3e-07


def test_csv_bom_and_headers() -> None:
    plain, marked = io.BytesIO(), io.BytesIO()
    record = {"file_name": "불량_001.png", "final_label": "anomalous"}
    columns = ("file_name", "final_label")
    export.write_csv([record], plain, columns=columns)
    headers = {"file_name": "파일명", "final_label": "최종 라벨"}
    export.write_csv([record], marked, columns=columns, headers=headers, bom=True)
    assert plain.getvalue().startswith(b"file_name,final_label\r\n")
    assert marked.getvalue().startswith(b"\xef\xbb\xbf" + "파일명,최종 라벨\r\n".encode())
    # Values are never translated.
    assert marked.getvalue().endswith("불량_001.png,anomalous\r\n".encode())


def test_csv_record_recomputes_combined_score() -> None:
    record = export.csv_record(export_row("a.png", recon_score=1.0, latent_mahalanobis=2.0))
    assert record["combined_score"] == pytest.approx(2.0)  # max(1.0 / 0.5, 2.0 / 4.0)
    assert record["threshold_recon"] == 0.5
    assert record["final_label"] == "normal"
    rejected = export.csv_record(
        export_row(
            "bad.png",
            status=ImageStatus.REJECTED,
            rejection_code="not_an_image",
            rejection_message="bad.png: not a readable image",
            recon_score=None,
            latent_mahalanobis=None,
            latent_euclidean=None,
            combined_score=None,
            auto_label=None,
            final_label=None,
        )
    )
    assert rejected["status"] == "rejected"
    assert rejected["combined_score"] is None
    assert rejected["threshold_recon"] is None


def test_csv_record_time_is_utc_iso() -> None:
    moment = datetime(2026, 12, 4, 22, 15, 3, tzinfo=UTC)
    record = export.csv_record(export_row("a.png", reviewer="ana", reviewed_at=moment))
    assert record["reviewed_at"] == "2026-12-04T22:15:03+00:00"


def test_unique_path_numbers_duplicates() -> None:
    used: set[str] = set()
    assert export.unique_path("normal/img_001.png", used) == "normal/img_001.png"
    assert export.unique_path("normal/img_001.png", used) == "normal/img_001 (2).png"
    assert export.unique_path("normal/IMG_001.PNG", used) == "normal/IMG_001 (3).PNG"
    assert export.unique_path("normal/lineA/img_001.png", used) == "normal/lineA/img_001.png"


def test_unique_path_unicode_forms_collide() -> None:
    used: set[str] = set()
    composed = unicodedata.normalize("NFC", "naïve.png")
    decomposed = unicodedata.normalize("NFD", "naïve.png")
    assert export.unique_path(composed, used) == composed
    renamed = export.unique_path(decomposed, used)
    # The name keeps the bytes it came with, and only the number is added.
    assert renamed == unicodedata.normalize("NFD", "naïve (2).png")


def test_archive_paths_layout() -> None:
    rows = [
        export_row("img_001.png", heatmap_path="h/1.png", stored_path="o/1.png"),
        export_row("img_001.png", heatmap_path="h/2.png", stored_path="o/2.png"),
        export_row(
            "img_001.jpg",
            "lineA/sub",
            final_label=LabelValue.ANOMALOUS,
            heatmap_path="h/3.png",
            stored_path="o/3.jpg",
        ),
        export_row("x.png", "../../etc", heatmap_path="h/4.png", stored_path="o/4.png"),
        export_row("bad.png", status=ImageStatus.REJECTED, final_label=None),
        export_row("wait.png", final_label=None, status=ImageStatus.PENDING, stored_path="o/5"),
    ]
    paths = export.archive_paths(rows)
    assert [(where.image, where.heatmap) for where in paths] == [
        ("normal/img_001.png", "heatmaps/normal/img_001.png"),
        ("normal/img_001 (2).png", "heatmaps/normal/img_001 (2).png"),
        ("anomalous/lineA/sub/img_001.jpg", "heatmaps/anomalous/lineA/sub/img_001.png"),
        ("normal/etc/x.png", "heatmaps/normal/etc/x.png"),
        (None, None),
        ("unlabelled/wait.png", None),
    ]


def test_write_zip_streams_files(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "home")
    for relative, data in (("o/1.png", b"one"), ("h/1.png", b"heat"), ("o/2.png", b"two")):
        target = files.resolve(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    rows = [
        export_row("불량_001.png", "라인A", stored_path="o/1.png", heatmap_path="h/1.png"),
        export_row("gone.png", stored_path="o/missing.png", heatmap_path="h/missing.png"),
        export_row("=cmd.png", stored_path="o/2.png", final_label=LabelValue.ANOMALOUS),
    ]

    target = tmp_path / "out.zip"
    calls = []
    summary = export.write_zip(
        rows, target, files, {"format": "davae-export"}, progress=lambda *a: calls.append(a)
    )
    assert (summary.images, summary.heatmaps) == (2, 1)
    assert summary.missing == ["o/missing.png", "h/missing.png"]
    assert calls == [(1, 3), (2, 3), (3, 3)]

    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert names == [
            "normal/라인A/불량_001.png",
            "heatmaps/normal/라인A/불량_001.png",
            "anomalous/=cmd.png",
            "labels.csv",
            "manifest.json",
        ]
        assert archive.getinfo("normal/라인A/불량_001.png").flag_bits & 0x800
        assert archive.read("normal/라인A/불량_001.png") == b"one"
        manifest = json.loads(archive.read("manifest.json"))
        table = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode("utf-8"))))

    assert manifest["files"] == {"images": 2, "heatmaps": 1}
    assert manifest["missing_files"] == ["o/missing.png", "h/missing.png"]
    assert [row["archive_path"] for row in table] == [
        "normal/라인A/불량_001.png",
        "",
        "anomalous/=cmd.png",
    ]
    assert table[2]["file_name"] == "'=cmd.png"


def test_export_file_name_is_safe() -> None:
    assert export.export_file_name(3, "라인 1 / lot 7", "csv") == "batch-3-라인_1_lot_7.csv"
    assert export.export_file_name(4, "///", "zip") == "batch-4.zip"
