"""The Export page and its files on a batch scored by the real worker.

The CSV is made by the callable the page binds to its download button
(``ui.export_files.csv_download``), which Streamlit runs on click; AppTest
cannot click a download button, so the test calls it directly. The ZIP is
built through the page and read back from the file it wrote.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

from review_helpers import (
    BATCH_NAME,
    DUPLICATE_NAME,
    FORMULA_NAMES,
    REJECTED_NAMES,
    UNICODE_NAMES,
    ScoredBatch,
)
from sqlalchemy import select
from ui_helpers import REVIEWER

from davae import export
from storage import audit, batches, labels, registry
from storage.db import Storage
from storage.models import Image, LabelValue
from ui import export_files
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def image_id(storage: Storage, batch_id: int, name: str, folder: str = "", nth: int = 0) -> int:
    statement = (
        select(Image.id)
        .where(Image.batch_id == batch_id, Image.file_name == name, Image.folder == folder)
        .order_by(Image.position)
    )
    with storage.database.read() as session:
        return list(session.scalars(statement))[nth]


def export_entries(storage: Storage, batch_id: int) -> list[audit.AuditEntry]:
    with storage.database.read() as session:
        return audit.list_entries(session, batch_id=batch_id, action=audit.AuditAction.EXPORT)


def test_csv_columns_and_rows(scored_storage: Storage, scored_batch: ScoredBatch) -> None:
    batch_id = scored_batch.batch_id
    data = export_files.csv_download(scored_storage, batch_id, REVIEWER, None, False)()
    assert not data.startswith(b"\xef\xbb\xbf")
    header = data.split(b"\r\n", 1)[0].decode("utf-8")
    assert header.split(",") == list(export.CSV_COLUMNS)
    rows = read_csv(data)
    assert len(rows) == scored_batch.scored + scored_batch.rejected
    assert {row["batch_name"] for row in rows} == {BATCH_NAME}
    assert {row["model_name"] for row in rows} == {"needles"}
    scored = [row for row in rows if row["status"] == "scored"]
    assert {row["final_label"] for row in scored} <= {"normal", "anomalous"}
    rejected = [row for row in rows if row["status"] == "rejected"]
    assert [row["file_name"] for row in rejected] == list(REJECTED_NAMES)
    assert [row["rejection_code"] for row in rejected] == ["not_an_image", "unsupported_type"]
    assert all(row["rejection_reason"] for row in rejected)

    with scored_storage.database.read() as session:
        batch = batches.get_batch(session, batch_id)
    for row in scored:
        assert float(row["threshold_recon"]) == batch.thresholds["recon"]
        metric = batch.thresholds["latent_metric"]
        recon, latent = float(row["recon_score"]), float(row[f"latent_{metric}"])
        combined = max(recon / batch.thresholds["recon"], latent / batch.thresholds["latent"])
        assert float(row["combined_score"]) == combined
        anomalous = combined > 1.0
        assert row["auto_label"] == ("anomalous" if anomalous else "normal")

    [entry] = export_entries(scored_storage, batch_id)
    assert (entry.actor, entry.details) == (
        REVIEWER,
        {"format": "csv", "rows": scored_batch.scored + scored_batch.rejected},
    )


def test_csv_is_excel_safe(scored_storage: Storage, scored_batch: ScoredBatch) -> None:
    data = export_files.csv_download(scored_storage, scored_batch.batch_id, REVIEWER, None, False)()
    text = data.decode("utf-8")
    names = [row["file_name"] for row in read_csv(data)]
    for name in FORMULA_NAMES:
        assert "'" + name in names
        assert f"\r\n{name}," not in text
    # Numbers are written bare: the field after the model name is the model version.
    line = next(line for line in text.split("\r\n") if line.startswith("'=cmd.png,"))
    fields = next(csv.reader([line]))
    version = fields[export.CSV_COLUMNS.index("model_version")]
    assert version == "1"
    recon = fields[export.CSV_COLUMNS.index("recon_score")]
    assert f",{recon}," in line
    assert float(recon) > 0


def test_csv_names_are_byte_exact(scored_storage: Storage, scored_batch: ScoredBatch) -> None:
    data = export_files.csv_download(scored_storage, scored_batch.batch_id, REVIEWER, None, True)()
    assert data.startswith(b"\xef\xbb\xbf")
    for name in UNICODE_NAMES:
        assert b"\r\n" + name.encode("utf-8") + b"," in data
    assert "라인A".encode() in data


def test_csv_korean_headers(scored_storage: Storage, scored_batch: ScoredBatch) -> None:
    headers = export_files.csv_headers("ko")
    data = export_files.csv_download(
        scored_storage, scored_batch.batch_id, REVIEWER, headers, True
    )()
    table = read_csv(data)
    assert list(table[0]) == [KO[f"export.column.{column}"] for column in export.CSV_COLUMNS]
    final = {row[KO["export.column.final_label"]] for row in table}
    assert final == {"normal", "anomalous", ""}


def set_human_labels(storage: Storage, batch_id: int) -> dict[int, str]:
    """Label the four img_001.png files by hand so the ZIP folders are known."""
    chosen = {
        image_id(storage, batch_id, DUPLICATE_NAME, nth=0): "normal",
        image_id(storage, batch_id, DUPLICATE_NAME, nth=1): "normal",
        image_id(storage, batch_id, DUPLICATE_NAME, "lineA"): "anomalous",
        image_id(storage, batch_id, DUPLICATE_NAME, "lineB"): "normal",
        image_id(storage, batch_id, UNICODE_NAMES[0]): "anomalous",
    }
    for image, value in chosen.items():
        labels.save_human_label(storage.database, image, value, REVIEWER)
    return chosen


def test_zip_layout_and_manifest(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch
) -> None:
    batch_id = scored_batch.batch_id
    set_human_labels(scored_storage, batch_id)
    at = open_app("export")
    assert not at.exception
    at.selectbox(key="export_headers").set_value("machine").run()
    at.button(key=f"export_build_{batch_id}").click().run()
    assert not at.exception
    assert at.success[0].value == EN["export.zip_ready"].format(
        images=scored_batch.scored, heatmaps=scored_batch.scored
    )
    built = at.session_state[export_files.ZIP_STATE_KEY]
    assert built.file_name == export.export_file_name(batch_id, BATCH_NAME, "zip")
    assert Path(built.path).parent == scored_storage.settings.home / "exports"

    with scored_storage.database.read() as session:
        rows = {
            (row.folder, row.file_name, row.sha256)
            for row in session.execute(
                select(Image.folder, Image.file_name, Image.sha256).where(
                    Image.batch_id == batch_id
                )
            )
        }
        batch = batches.get_batch(session, batch_id)
        model = registry.get_model_version(session, batch.model_version_id)
    with zipfile.ZipFile(built.path) as archive:
        names = archive.namelist()
        for expected in (
            "normal/img_001.png",
            "normal/img_001 (2).png",
            "anomalous/lineA/img_001.png",
            "normal/lineB/img_001.png",
            "anomalous/불량_001.png",
            "heatmaps/anomalous/lineA/img_001.png",
            "heatmaps/normal/img_001 (2).png",
            "labels.csv",
            "manifest.json",
        ):
            assert expected in names
        assert any(name.endswith("라인A/부품_002.png") for name in names)
        images = [name for name in names if name.startswith(("normal/", "anomalous/"))]
        heatmaps = [name for name in names if name.startswith("heatmaps/")]
        assert len(images) == scored_batch.scored
        assert len(heatmaps) == scored_batch.scored
        assert not [name for name in names if "broken" in name or "notes" in name]
        assert archive.getinfo("anomalous/불량_001.png").flag_bits & 0x800
        for name in images:
            digest = hashlib.sha256(archive.read(name)).hexdigest()
            folder = "/".join(name.split("/")[1:-1])
            assert any(row[0] == folder and row[2] == digest for row in rows), name
        assert archive.read(heatmaps[0]).startswith(b"\x89PNG")
        manifest = json.loads(archive.read("manifest.json").decode("utf-8"))
        table = read_csv(archive.read("labels.csv"))

    assert manifest["model"] == {
        "id": model.id,
        "name": "needles",
        "version": 1,
        "bundle_sha256": model.bundle_sha256,
        "calibrated_thresholds": model.thresholds,
    }
    assert manifest["thresholds"] == batch.thresholds
    assert manifest["batch"]["name"] == BATCH_NAME
    assert manifest["exported_by"] == REVIEWER
    assert manifest["counts"]["rejected"] == scored_batch.rejected
    assert manifest["counts"]["human_reviewed"] == 5
    assert manifest["counts"]["normal"] + manifest["counts"]["anomalous"] == scored_batch.scored
    assert manifest["files"] == {"images": scored_batch.scored, "heatmaps": scored_batch.scored}
    assert [item["file_name"] for item in manifest["rejected"]] == list(REJECTED_NAMES)
    assert manifest["csv"] == {
        "file": "labels.csv",
        "encoding": "utf-8",
        "bom": True,
        "headers": "machine",
    }
    paths = {row["archive_path"] for row in table if row["archive_path"]}
    assert paths == set(images)
    [entry] = export_entries(scored_storage, batch_id)
    assert entry.details == {"format": "zip", "rows": scored_batch.scored + scored_batch.rejected}


def test_export_page_in_korean(open_app, scored_batch: ScoredBatch) -> None:
    at = open_app("export", language="ko")
    assert not at.exception
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown[KO["export.count_rejected"]] == str(scored_batch.rejected)
    assert int(shown[KO["export.count_normal"]]) + int(shown[KO["export.count_anomalous"]]) == (
        scored_batch.scored
    )
    assert [button.label for button in at.get("download_button")] == [KO["export.download_csv"]]
    table = at.dataframe[0].value
    assert list(table[KO["common.column_file"]]) == list(REJECTED_NAMES)


def test_export_needs_reviewer(open_app, scored_batch: ScoredBatch) -> None:
    at = open_app("export", reviewer="")
    assert at.button(key=f"export_build_{scored_batch.batch_id}").disabled
    assert EN["common.reviewer_required"] in [warning.value for warning in at.warning]


def test_human_label_decides_csv_row(scored_storage: Storage, scored_batch: ScoredBatch) -> None:
    batch_id = scored_batch.batch_id
    target = image_id(scored_storage, batch_id, "part_00.png")
    labels.save_human_label(scored_storage.database, target, LabelValue.ANOMALOUS, REVIEWER)
    rows = read_csv(export_files.csv_download(scored_storage, batch_id, REVIEWER, None, False)())
    [row] = [row for row in rows if row["file_name"] == "part_00.png"]
    assert (row["human_label"], row["final_label"], row["reviewer"]) == (
        "anomalous",
        "anomalous",
        REVIEWER,
    )
    assert row["reviewed_at"].endswith("+00:00")
