"""A data directory with a model and one batch scored by the real worker, for Review and Export.

The batch is built once per test session (``scored_template`` in conftest.py)
and copied into each test's DAVAE_HOME, so every test starts from the same
scored batch without training or scoring again.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ui_helpers import REVIEWER, defect_pixels, normal_pixels, png_bytes, tiny_config

from davae.worker import Worker
from davae.worker_io import new_upload_dir, score_job_params, upload_entry
from storage import batches, jobs, registry
from storage.db import StorageSettings, open_storage
from storage.models import JobKind, JobStatus

BATCH_NAME = "라인 1 / lot 7"
# Names a spreadsheet would read as formulas, and names outside ASCII.
FORMULA_NAMES = ("=cmd.png", "+x.png", "-x.png", "@x.png")
UNICODE_NAMES = ("불량_001.png", "naïve.png")
DUPLICATE_NAME = "img_001.png"  # uploaded twice at the top level and once in each ZIP folder
ZIP_MEMBERS = ("lineA/img_001.png", "lineB/img_001.png", "라인A/부품_002.png")
REJECTED_NAMES = ("broken.png", "notes.txt")


@dataclass(frozen=True)
class ScoredBatch:
    batch_id: int
    model_version_id: int
    scored: int
    rejected: int


def batch_uploads() -> list[tuple[str, bytes]]:
    """The uploaded files in upload order: names that need care, normals, defects, bad files."""
    rng = np.random.default_rng(11)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for member in ZIP_MEMBERS:
            zipped.writestr(member, png_bytes(normal_pixels(rng)))
    files = [(name, png_bytes(normal_pixels(rng))) for name in FORMULA_NAMES]
    files += [(UNICODE_NAMES[0], png_bytes(defect_pixels(rng)))]
    files += [(UNICODE_NAMES[1], png_bytes(normal_pixels(rng)))]
    files += [(DUPLICATE_NAME, png_bytes(normal_pixels(rng))) for _ in range(2)]
    files += [(f"part_{index:02d}.png", png_bytes(normal_pixels(rng))) for index in range(6)]
    files += [(f"defect_{index:02d}.png", png_bytes(defect_pixels(rng))) for index in range(4)]
    files += [("lot.zip", archive.getvalue())]
    files += [(REJECTED_NAMES[0], b"not really a png"), (REJECTED_NAMES[1], b"text")]
    return files


def build_scored_home(home: Path, bundle: Path) -> ScoredBatch:
    """Register ``bundle`` in a new data directory and score :func:`batch_uploads` there."""
    from davae.bundle import load_bundle

    storage = open_storage(
        StorageSettings(home=home, database_url=f"sqlite:///{home / 'davae.db'}")
    )
    try:
        database = storage.database
        stored = storage.files.store_model_bundle(bundle)
        thresholds = load_bundle(bundle).thresholds.to_dict()
        model = database.run_write(
            lambda session: registry.register_model_version(
                session,
                name="needles",
                bundle=stored,
                config=tiny_config().to_dict(),
                thresholds={**thresholds, "review_low": None, "review_high": None},
                created_by=REVIEWER,
            ),
            action="register the test model",
        )
        upload_dir = new_upload_dir()
        entries = []
        for index, (name, data) in enumerate(batch_uploads()):
            relative = f"{upload_dir}/{index:05d}{Path(name).suffix}"
            target = storage.files.resolve(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            entries.append(upload_entry(relative, name))
        batch = database.run_write(
            lambda session: batches.create_batch(
                session, name=BATCH_NAME, model_version_id=model.id, created_by=REVIEWER
            ),
            action="create the test batch",
        )
        job = database.run_write(
            lambda session: jobs.enqueue_job(
                session,
                JobKind.SCORE,
                score_job_params(entries, batch.id, upload_dir=upload_dir),
                REVIEWER,
                batch_id=batch.id,
                model_version_id=model.id,
            ),
            action="enqueue the test scoring job",
        )
        Worker(storage).run(until_idle=True)
        with database.read() as session:
            finished = jobs.get_job(session, job.id)
            scored = batches.get_batch(session, batch.id)
        assert finished.status == JobStatus.DONE, finished.error_message
        return ScoredBatch(
            batch_id=batch.id,
            model_version_id=model.id,
            scored=scored.scored_count,
            rejected=scored.rejected_count,
        )
    finally:
        storage.database.dispose()


def copy_home(template: Path, home: Path) -> None:
    """Copy a closed data directory (database and files) to ``home``."""
    shutil.copytree(template, home)
