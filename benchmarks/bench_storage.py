"""Benchmark the storage layer on 10,000-image batches, on SQLite and optionally PostgreSQL.

Measures what the dashboard waits for: inserting the scores and auto labels
of a scored batch, applying new thresholds, and reading the review table,
the export rows and the label counts. Each measurement runs on a fresh
batch (writes) or repeats on the same batch (reads), and the table shows the
median and the fastest run, in milliseconds.

    .venv/bin/python benchmarks/bench_storage.py
    .venv/bin/python benchmarks/bench_storage.py \\
        --postgresql-url postgresql+psycopg://postgres@127.0.0.1:5432/davae_test

For PostgreSQL the script creates a schema of its own in the given database
and drops it afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# Run as a script from any directory: make the repository's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import batches, export, labels, registry, review, scores
from storage.db import Storage, StorageSettings, open_storage
from storage.models import ImageStatus

THRESHOLDS = {
    "recon": 0.5,
    "latent": 4.0,
    "recon_reduction": "max",
    "latent_metric": "mahalanobis",
    "review_low": None,
    "review_high": None,
}
HUMAN_LABEL_SHARE = 10  # one image in this many gets a human label before the reads


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument(
        "--postgresql-url",
        help="also run on this PostgreSQL database (a schema is created and dropped)",
    )
    return parser.parse_args()


@contextmanager
def sqlite_storage() -> Iterator[Storage]:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as home:
        opened = open_storage(
            StorageSettings(home=Path(home), database_url=f"sqlite:///{home}/davae.db")
        )
        try:
            yield opened
        finally:
            opened.database.dispose()


@contextmanager
def postgresql_storage(url: str) -> Iterator[Storage]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as home:
            opened = open_storage(
                StorageSettings(
                    home=Path(home), database_url=scoped.render_as_string(hide_password=False)
                )
            )
            try:
                yield opened
            finally:
                opened.database.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def new_pending_batch(storage: Storage, model_id: int, count: int) -> int:
    """Create a batch with ``count`` pending images (database rows only, no files)."""
    database = storage.database
    batch = database.run_write(
        lambda session: batches.create_batch(
            session, name="bench", model_version_id=model_id, created_by="bench"
        ),
        action="create batch",
    )
    records = [
        batches.NewImage(
            position=position,
            file_name=f"img_{position:05d}.png",
            folder="line_a",
            status=ImageStatus.PENDING,
            sha256=f"{position:064x}",
            size_bytes=4096,
            width=512,
            height=512,
            format="PNG",
            stored_path=f"originals/00/{position:064x}.png",
        )
        for position in range(count)
    ]
    database.run_write(
        lambda session: batches.record_images(session, batch.id, records), action="record"
    )
    return batch.id


def fake_results(chunk: list[scores.PendingImage]) -> list[scores.NewScore]:
    return [
        scores.NewScore(
            image_id=image.id,
            recon_score=(image.position % 100) / 100,
            latent_euclidean=1.0 + image.position % 5,
            latent_mahalanobis=2.0 + image.position % 3,
            combined_score=(image.position % 100) / 50,
            heatmap_path=f"heatmaps/1/00/{image.position:064x}.png",
        )
        for image in chunk
    ]


def time_once(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def run_backend(storage: Storage, images: int, repeats: int) -> dict[str, list[float]]:
    database = storage.database
    source = storage.files.home / "bundle.pt"
    source.write_bytes(b"benchmark bundle")
    bundle = storage.files.store_model_bundle(source)
    model = database.run_write(
        lambda session: registry.register_model_version(
            session,
            name="bench",
            bundle=bundle,
            config={},
            thresholds=THRESHOLDS,
            created_by="bench",
        ),
        action="register",
    )
    timings: dict[str, list[float]] = {}

    for _ in range(repeats):
        batch_id = new_pending_batch(storage, model.id, images)
        with database.read() as session:
            results = fake_results(scores.pending_images(session, batch_id))
        timings.setdefault(f"insert scores + auto labels, {images} images, 1 commit", []).append(
            time_once(
                lambda batch_id=batch_id, results=results: database.run_write(
                    lambda session: scores.commit_scored_chunk(
                        session, batch_id, results, actor="bench"
                    ),
                    action="commit",
                )
            )
        )
        timings.setdefault(f"apply thresholds, {images} images", []).append(
            time_once(
                lambda batch_id=batch_id: database.run_write(
                    lambda session: labels.apply_thresholds(
                        session, batch_id, {**THRESHOLDS, "recon": 0.6}, "bench"
                    ),
                    action="apply",
                )
            )
        )

    chunked_batch = new_pending_batch(storage, model.id, images)
    timings[f"score_pending, {images} images, chunks of 64"] = [
        time_once(
            lambda: scores.score_pending(
                database, chunked_batch, fake_results, actor="bench", chunk_size=64
            )
        )
    ]

    # Reads: the last insert batch, with a human label on every tenth image.
    with database.read() as session:
        rows = review.batch_table(session, batch_id)
    reviewed = [row.image_id for row in rows[::HUMAN_LABEL_SHARE]]
    database.run_write(
        lambda session: labels.add_human_labels(session, reviewed, "anomalous", "reviewer"),
        action="human labels",
    )
    reads = {
        f"read review table, {images} images": review.batch_table,
        f"read export rows, {images} images": export.export_rows,
        "label counts": review.label_counts,
    }
    for name, query in reads.items():
        for _ in range(repeats):

            def read(query=query) -> None:
                with database.read() as session:
                    query(session, batch_id)

            timings.setdefault(name, []).append(time_once(read))

    # Planner statistics change query plans; autovacuum gathers them at any
    # time on PostgreSQL, so measure the main read with them as well.
    with database.engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    for _ in range(repeats):

        def read_table() -> None:
            with database.read() as session:
                review.batch_table(session, batch_id)

        timings.setdefault(f"read review table after ANALYZE, {images} images", []).append(
            time_once(read_table)
        )
    return timings


def print_table(results: dict[str, dict[str, list[float]]]) -> None:
    backends = list(results)
    header = "| measurement | " + " | ".join(f"{b} median (min), ms" for b in backends) + " |"
    print(header)
    print("|" + "---|" * (len(backends) + 1))
    for name in results[backends[0]]:
        cells = []
        for backend in backends:
            values = results[backend][name]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> int:
    args = parse_args()
    results = {}
    with sqlite_storage() as storage:
        results["SQLite"] = run_backend(storage, args.images, args.repeats)
    if args.postgresql_url:
        with postgresql_storage(args.postgresql_url) as storage:
            results["PostgreSQL"] = run_backend(storage, args.images, args.repeats)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
