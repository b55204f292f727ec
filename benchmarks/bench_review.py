"""Benchmark the Review page on a 10,000-image batch: a rerun after moving a threshold.

Builds a batch in a temporary DAVAE_HOME with the storage API: scores from
fixed random distributions, one image in ten labelled by a reviewer, and
tiny generated PNGs as originals and display files. Then it drives the real
page with Streamlit's AppTest. It moves the reconstruction threshold slider
and times ``AppTest.run()``, the whole server-side rerun of app.py and the
page (router, change-marker query, cached table, recomputation, three
histograms, the gallery page). The first runs, which read the table and
make thumbnails, are reported apart from the reruns. It also times the
pure recomputation (``ui.review_data``) and the queries alone.

    .venv/bin/python benchmarks/bench_review.py
    .venv/bin/python benchmarks/bench_review.py --images 10000 --repeats 40
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

# Run as a script from any directory: make the repository's packages importable.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import batches, labels, registry, review, scores  # noqa: E402
from storage.db import Storage, StorageSettings, open_storage  # noqa: E402
from storage.models import ImageStatus  # noqa: E402

THRESHOLDS = {
    "recon": 0.5,
    "latent": 4.0,
    "recon_reduction": "max",
    "latent_metric": "mahalanobis",
    "target_fpr": 0.01,
    "review_low": None,
    "review_high": None,
}
HUMAN_LABEL_SHARE = 10  # one image in this many gets a human label
THUMBNAIL_SIDE = 64  # pixels of the generated originals and display files
# Slider positions visited in turn, as multiples of the calibrated reconstruction threshold.
SLIDER_FACTORS = (0.8, 1.2, 0.9, 1.1, 1.3, 0.7)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images in the batch")
    parser.add_argument("--repeats", type=int, default=30, help="timed reruns after a slider move")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def png_bytes(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 255, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_file(storage: Storage, relative: str, data: bytes) -> None:
    # Plain writes, without FileStore's fsync: the benchmark reads the files, it
    # does not measure writing them.
    path = storage.files.resolve(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_batch(storage: Storage, count: int, seed: int) -> int:
    """Create a scored batch of ``count`` images with files on disk; return its id."""
    rng = np.random.default_rng(seed)
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
    batch = database.run_write(
        lambda session: batches.create_batch(
            session, name="bench", model_version_id=model.id, created_by="bench"
        ),
        action="create batch",
    )

    samples = [png_bytes(rng) for _ in range(16)]
    records = []
    for position in range(count):
        sha = f"{position:064x}"
        stored_path = f"originals/{sha[:2]}/{sha}.png"
        write_file(storage, stored_path, samples[position % len(samples)])
        records.append(
            batches.NewImage(
                position=position,
                file_name=f"img_{position:05d}.png",
                folder=f"line_{position % 4}",
                status=ImageStatus.PENDING,
                sha256=sha,
                size_bytes=len(samples[0]),
                width=THUMBNAIL_SIDE,
                height=THUMBNAIL_SIDE,
                format="PNG",
                stored_path=stored_path,
            )
        )
    database.run_write(
        lambda session: batches.record_images(session, batch.id, records), action="record"
    )

    # Normal images near the thresholds' scale, and about 2% clear anomalies.
    recon = rng.lognormal(np.log(0.35), 0.25, count)
    latent = rng.gamma(6.0, 0.45, count)
    defects = rng.random(count) < 0.02
    recon[defects] *= rng.uniform(1.5, 4.0, defects.sum())
    with database.read() as session:
        pending = scores.pending_images(session, batch.id)
    results = []
    for image in pending:
        heatmap = f"heatmaps/{model.id}/{image.sha256[:2]}/{image.sha256}.png"
        write_file(storage, heatmap, samples[(image.position + 1) % len(samples)])
        write_file(
            storage, heatmap.removesuffix(".png") + ".recon.png", samples[image.position % 7]
        )
        r, m = float(recon[image.position]), float(latent[image.position])
        results.append(
            scores.NewScore(
                image_id=image.id,
                recon_score=r,
                latent_euclidean=m * 0.8,
                latent_mahalanobis=m,
                combined_score=max(r / THRESHOLDS["recon"], m / THRESHOLDS["latent"]),
                heatmap_path=heatmap,
            )
        )
    database.run_write(
        lambda session: scores.commit_scored_chunk(session, batch.id, results, actor="bench"),
        action="commit scores",
    )
    reviewed = [image.id for image in pending[::HUMAN_LABEL_SHARE]]
    database.run_write(
        lambda session: labels.add_human_labels(session, reviewed, "anomalous", "bench"),
        action="human labels",
    )
    return batch.id


def time_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100))


def summary(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values):.0f} | {percentile(values, 0.9):.0f} "
        f"| {min(values):.0f} | {len(values)} |"
    )


def measure_page(batch_id: int, repeats: int) -> dict[str, list[float]]:
    """Drive the Review page with AppTest and time its reruns after slider moves."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["language"] = "en"
    at.session_state["reviewer"] = "bench"
    at.run()
    first = time_ms(lambda: at.switch_page("app_pages/review.py").run())
    if at.exception:
        raise RuntimeError(f"the Review page failed: {at.exception[0].message}")
    key = f"review_recon_{batch_id}"
    timings: dict[str, list[float]] = {"first view (table read, thumbnails made)": [first]}
    # 12 images per page, the default, until the last measurement.

    # One pass over the slider positions makes the thumbnails of every gallery
    # page those positions show; the timed passes then measure reruns alone.
    for factor in SLIDER_FACTORS:
        at.slider(key=key).set_value(THRESHOLDS["recon"] * factor)
        timings.setdefault("first visit of a slider position", []).append(time_ms(at.run))
    for index in range(repeats):
        factor = SLIDER_FACTORS[index % len(SLIDER_FACTORS)]
        at.slider(key=key).set_value(THRESHOLDS["recon"] * factor)
        timings.setdefault("rerun after moving a threshold", []).append(time_ms(at.run))
        if at.exception:
            raise RuntimeError(f"the Review page failed: {at.exception[0].message}")

    # The largest gallery page: 48 cards of three pictures each.
    at.selectbox(key="review_page_size").set_value(48).run()
    for factor in SLIDER_FACTORS:
        at.slider(key=key).set_value(THRESHOLDS["recon"] * factor).run()
    for index in range(repeats):
        factor = SLIDER_FACTORS[index % len(SLIDER_FACTORS)]
        at.slider(key=key).set_value(THRESHOLDS["recon"] * factor)
        timings.setdefault("rerun after moving a threshold, 48 images per page", []).append(
            time_ms(at.run)
        )
    return timings


def measure_parts(storage: Storage, batch_id: int, repeats: int) -> dict[str, list[float]]:
    """Time the steps of a rerun on their own: the marker query and the recomputation."""
    from ui import review_data
    from ui.review_state import batch_marker

    database = storage.database
    timings: dict[str, list[float]] = {}
    for _ in range(max(5, repeats // 3)):

        def read_marker() -> None:
            with database.read() as session:
                batch_marker(session, batch_id)

        def read_table() -> None:
            with database.read() as session:
                review.batch_table(session, batch_id)

        timings.setdefault("change-marker query", []).append(time_ms(read_marker))
        timings.setdefault("review table read (a cache miss)", []).append(time_ms(read_table))

    with database.read() as session:
        frame = review_data.scored_frame(review.batch_table(session, batch_id), "mahalanobis")
    recon, latent = frame["recon"].to_numpy(), frame["latent"].to_numpy()

    def recompute(factor: float) -> None:
        live = review_data.LiveThresholds(
            THRESHOLDS["recon"] * factor, THRESHOLDS["latent"], 0.9, 1.1
        )
        decisions = review_data.decide(frame, live)
        review_data.count(decisions)
        for values in (recon, latent, decisions.combined):
            edges = review_data.bin_edges(values, 40)
            review_data.class_histogram(values, decisions.auto_class, edges)
        mask = review_data.filter_mask(decisions, "review")
        review_data.gallery_order(frame, decisions, mask, "score_desc")
        review_data.agreement(decisions)

    recompute(1.0)  # imports scikit-learn once
    for index in range(repeats * 5):
        factor = SLIDER_FACTORS[index % len(SLIDER_FACTORS)]
        timings.setdefault(
            "pure recompute (labels, band, counts, 3 histograms, filter, order, agreement)", []
        ).append(time_ms(lambda factor=factor: recompute(factor)))
    return timings


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-review-") as home:
        os.environ["DAVAE_HOME"] = home
        os.environ["DAVAE_APP_WORKER"] = "0"  # no background worker thread in the way
        os.environ.pop("DAVAE_DATABASE_URL", None)
        storage = open_storage(
            StorageSettings(home=Path(home), database_url=f"sqlite:///{home}/davae.db")
        )
        try:
            started = time.perf_counter()
            batch_id = build_batch(storage, args.images, args.seed)
            print(f"built a batch of {args.images} images in {time.perf_counter() - started:.1f} s")
            timings = measure_page(batch_id, args.repeats)
            timings.update(measure_parts(storage, batch_id, args.repeats))
        finally:
            storage.database.dispose()
    print("| measurement | median, ms | p90, ms | min, ms | runs |")
    print("|---|---:|---:|---:|---:|")
    for name, values in timings.items():
        print(summary(name, values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
