"""Benchmark the engine: scoring and training throughput, and peak memory while scoring.

Everything runs on the CPU with ``torch.set_num_threads(2)`` and the default
``DetectorConfig``. Throughput needs no trained weights, so the model is an
untrained ConvVAE of the default size. The inputs are generated 256 x 256
8-bit grayscale JPEGs of a textured surface.

    .venv/bin/python benchmarks/bench_engine.py
    .venv/bin/python benchmarks/bench_engine.py --quick   # smaller counts, a smoke run

Measured, each as the best of ``--repeats`` runs of at least ``--seconds``:

- scoring from model-input tensors (model and scores only);
- each stage alone: JPEG decoding, preprocessing, the model;
- scoring from decoded pixels (preprocessing, model, scores);
- end to end from JPEG bytes (decoding, preprocessing, model, scores);
- training, in samples per second (augmented copies included);
- peak RSS of the CLI's score command (``davae.cli.main`` in a fresh
  interpreter for each count) on folders of 1,000, 5,000 and 10,000 JPEG
  files, and of a process that only loads the model. Linux only, because
  it reads /proc/self/status.

The load average is printed with the results: other processes on the
machine slow every number down.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Run as a script from any directory: make the repository's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from davae.bundle import save_bundle
from davae.calibration import HeatmapScale, Thresholds
from davae.config import DetectorConfig
from davae.detector import RAW_SCORE_NAMES, Detector
from davae.imageio import decode_image
from davae.inputs import InputFile
from davae.model import ConvVAE
from davae.multiscale import ErrorStats, FeatureStats
from davae.preprocess import prepare
from davae.scoring import LatentStats, analyze_batch
from davae.training import train_detector

REPO_ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
IMAGE_SIDE = 256  # generated input images, pixels
JPEG_POOL = 64  # distinct JPEG files; longer runs cycle through them
RSS_COUNTS = (1_000, 5_000, 10_000)
QUICK_RSS_COUNTS = (100, 500, 1_000)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="minimum length of one run, in seconds"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs and 100 / 500 / 1,000 images for RSS"
    )
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument("--skip-training", action="store_true", help="skip the training run")
    parser.add_argument(
        "--compare-layouts",
        action="store_true",
        help="also compare end-to-end scoring with default and channels-last model weights",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args()


# -- inputs and the model ---------------------------------------------------------


def textured_image(rng: np.random.Generator, side: int = IMAGE_SIDE) -> np.ndarray:
    """Generate a uint8 (side, side) surface: smooth waves, grain, a few streaks."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    waves = np.sin(2 * np.pi * (3 * xx + rng.uniform(0, 1) * yy) + rng.uniform(0, 6))
    grain = rng.normal(0, 0.04, (side, side))
    pixels = 0.5 + 0.15 * waves + grain
    for row in rng.integers(0, side, 3):
        pixels[row, :] += 0.1
    return np.clip(pixels * 255, 0, 255).astype(np.uint8)


def jpeg_pool(count: int = JPEG_POOL) -> list[bytes]:
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(textured_image(rng)).save(buffer, "JPEG", quality=90)
        pool.append(buffer.getvalue())
    return pool


def untrained_detector(config: DetectorConfig) -> Detector:
    """Build a detector with random weights; scores are meaningless but cost the same."""
    torch.manual_seed(0)
    model = ConvVAE(config.vae).eval()
    scoring = config.scoring
    stages = scoring.multiscale_stages if scoring.uses_features else None
    sample = torch.rand(32, config.vae.channels, config.vae.image_size, config.vae.image_size)
    out = analyze_batch(model, sample, scoring.smoothing_sigma, stages, scoring.multiscale_grid)
    # The statistics the configuration scores against, fitted on random images:
    # their values do not matter, but their shapes set the cost of scoring.
    error_stats = None
    if scoring.error_normalization == "pixel":
        error_stats = ErrorStats.fit(out.error_maps.float())
    feature_stats = None
    if out.features is not None:
        feature_stats = FeatureStats.fit(out.features.float().numpy(), tuple(stages))
    return Detector(
        model=model,
        config=config,
        stats=LatentStats.fit(out.latents.float().numpy()),
        error_stats=error_stats,
        feature_stats=feature_stats,
        thresholds=Thresholds(
            1.0, 1.0, scoring.recon_reduction, scoring.latent_metric, scoring.target_fpr
        ),
        heatmap_scale=HeatmapScale(0.0, 1.0),
        calibration={name: np.zeros(1) for name in RAW_SCORE_NAMES},
    )


def cycle_items(pool: list[bytes], count: int) -> Iterator[InputFile]:
    for index in range(count):
        yield InputFile(f"img_{index:06d}.jpg", "", pool[index % len(pool)], "bench")


# -- measuring --------------------------------------------------------------------


def best_rate(run_once: Callable[[], int], repeats: int, seconds: float) -> tuple[float, float]:
    """Return the best images per second over ``repeats`` runs, and images per CPU-second.

    ``run_once`` processes some images and returns how many; a run repeats it
    until ``seconds`` have passed. CPU time counts all threads of the process.
    """
    run_once()  # warm-up: first calls allocate and pick kernels
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        images = 0
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        while time.perf_counter() - wall_start < seconds:
            images += run_once()
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        best_wall = max(best_wall, images / wall)
        best_cpu = max(best_cpu, images / cpu)
    return best_wall, best_cpu


def measure_scoring(detector: Detector, pool: list[bytes], repeats: int, seconds: float):
    config = detector.config
    batch_size = config.scoring.batch_size
    decoded = [decode_image(data, "bench.jpg", config.vae.channels).pixels for data in pool]
    tensors = torch.stack([prepare(pixels, config) for pixels in decoded[:batch_size]])

    def model_and_scores() -> int:
        return len(detector.analyze_tensors(tensors))

    def decode_only() -> int:
        for data in pool:
            decode_image(data, "bench.jpg", config.vae.channels)
        return len(pool)

    def preprocess_only() -> int:
        for pixels in decoded:
            prepare(pixels, config)
        return len(decoded)

    def from_pixels() -> int:
        detector.score_pixels(decoded[:batch_size])
        return batch_size

    def end_to_end() -> int:
        count = 2 * batch_size
        for _ in detector.score_items(cycle_items(pool, count)):
            pass
        return count

    rows = {}
    for name, run in (
        ("model and scores, from tensors", model_and_scores),
        ("JPEG decoding alone", decode_only),
        ("preprocessing alone", preprocess_only),
        ("scoring from decoded pixels", from_pixels),
        ("end to end from JPEG bytes", end_to_end),
    ):
        rows[name] = best_rate(run, repeats, seconds)
        print(f"  {name}: {rows[name][0]:.1f} images/s", file=sys.stderr)
    return rows


def measure_layouts(detector: Detector, pool: list[bytes], repeats: int, seconds: float):
    """Compare end-to-end scoring with default and channels-last weights, interleaved.

    Detector converts its model to channels-last; this puts a default-layout
    copy beside it, so both run under the same load.
    """
    channels_last = detector.model
    default_layout = copy.deepcopy(channels_last).to(memory_format=torch.contiguous_format)
    count = 2 * detector.config.scoring.batch_size

    def end_to_end() -> int:
        for _ in detector.score_items(cycle_items(pool, count)):
            pass
        return count

    best = {"default layout": (0.0, 0.0), "channels-last": (0.0, 0.0)}
    for _ in range(repeats):
        for name, model in (("default layout", default_layout), ("channels-last", channels_last)):
            detector.model = model
            wall, cpu = best_rate(end_to_end, 1, seconds)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    detector.model = channels_last
    for name, (wall, _) in best.items():
        print(f"  end to end, {name} weights: {wall:.1f} images/s", file=sys.stderr)
    return {f"end to end, {name} weights": rates for name, rates in best.items()}


def measure_training(config: DetectorConfig, epochs: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    images = [textured_image(rng, 160)[..., None].astype(np.float32) / 255 for _ in range(48)]
    reports = []
    train_config = config.replace(train__epochs=epochs, train__patience=epochs)
    started = time.perf_counter()
    detector = train_detector(images, train_config, progress=reports.append)
    total = time.perf_counter() - started
    epoch_reports = [r for r in reports if r.phase == "training"]
    samples_per_epoch = detector.metadata["train_count"] * (config.augment.iterations + 1)
    return {
        "train_images": detector.metadata["train_count"],
        "augment_iterations": config.augment.iterations,
        "samples_per_epoch": samples_per_epoch,
        "epochs": len(epoch_reports),
        "samples_per_second": epoch_reports[-1].images_per_second,
        "seconds_per_epoch": epoch_reports[-1].elapsed_s / len(epoch_reports),
        "total_seconds": total,
    }


# -- peak memory, one fresh process per count ------------------------------------------


# Runs in a fresh interpreter from the repository root: the CLI's score command
# on one folder, then its peak and current RSS. With no folder it only loads
# the model, which gives the floor that imports and weights take.
#
# The peak is VmHWM, the high-water mark of the process's own memory. It
# replaces ru_maxrss because Linux carries ru_maxrss across fork and exec, so
# a child of this large benchmark process reports at least the parent's RSS
# there. ru_maxrss is recorded as well.
RSS_CHILD = """
import json, resource, sys, time
from davae.cli import main

def status_mb(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024

started = time.perf_counter()
if len(sys.argv) > 2:
    code = main(["--threads", "2", "score", sys.argv[1], sys.argv[2], "--out", sys.argv[3]])
else:
    from davae.bundle import load_bundle
    load_bundle(sys.argv[1])
    code = 0
result = {
    "exit_code": code,
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": status_mb("VmHWM"),
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "current_rss_mb": status_mb("VmRSS"),
}
print(json.dumps(result))
"""


def run_rss_child(*args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_rss(detector: Detector, pool: list[bytes], counts: tuple[int, ...]) -> list[dict]:
    """Run the CLI's score command on a folder of each count, one fresh process each."""
    results = []
    with tempfile.TemporaryDirectory(prefix="davae-bench-") as directory:
        root = Path(directory)
        bundle = root / "untrained.pt"
        save_bundle(detector, bundle)
        files = []
        for index in range(max(counts)):
            path = root / "all" / f"img_{index:06d}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(pool[index % len(pool)])
            files.append(path)

        floor = run_rss_child(str(bundle))
        results.append({"count": 0, **floor, "images_per_second": math.nan})
        print(f"  model loaded, no images: {floor['peak_rss_mb']:.0f} MB", file=sys.stderr)
        for count in counts:
            folder = root / f"first_{count}"
            folder.mkdir()
            for path in files[:count]:
                os.link(path, folder / path.name)
            row = run_rss_child(str(bundle), str(folder), str(root / f"scores_{count}.csv"))
            row.update(count=count, images_per_second=count / row["seconds"])
            results.append(row)
            print(f"  {count} images: {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return results


# -- report -----------------------------------------------------------------------


def print_tables(scoring: dict, training: dict | None, rss: list[dict], load: tuple) -> None:
    print(f"load average before / after: {load[0]:.2f} / {load[1]:.2f} (1-minute)")
    print()
    print("| scoring, default config, 2 threads | images/s | images per CPU-second |")
    print("| --- | ---: | ---: |")
    for name, (wall, cpu) in scoring.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    if training is not None:
        print()
        print("| training, default config, 2 threads | value |")
        print("| --- | ---: |")
        print(
            f"| samples/s ({training['train_images']} images x "
            f"(1 + K = {training['augment_iterations']}) per epoch) | "
            f"{training['samples_per_second']:.1f} |"
        )
        print(f"| seconds per epoch | {training['seconds_per_epoch']:.1f} |")
    if rss:
        print()
        print(
            "| `python -m davae score` on a folder of JPEGs | peak RSS (VmHWM), MB "
            "| RSS at exit, MB | ru_maxrss, MB | images/s, model loading and CSV included |"
        )
        print("| ---: | ---: | ---: | ---: | ---: |")
        for row in rss:
            label = f"{row['count']:,} images" if row["count"] else "model loaded, no images"
            rate = f"{row['images_per_second']:.1f}" if row["count"] else "-"
            print(
                f"| {label} | {row['peak_rss_mb']:.0f} | {row['current_rss_mb']:.0f} "
                f"| {row['ru_maxrss_mb']:.0f} | {rate} |"
            )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(THREADS)
    repeats, seconds = (1, 2.0) if args.quick else (args.repeats, args.seconds)
    config = DetectorConfig()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    print(f"config: {config.vae}", file=sys.stderr)
    load_before = os.getloadavg()[0]
    pool = jpeg_pool()
    detector = untrained_detector(config)

    print("scoring throughput", file=sys.stderr)
    scoring = measure_scoring(detector, pool, repeats, seconds)
    if args.compare_layouts:
        scoring.update(measure_layouts(detector, pool, repeats, seconds))
    training = None
    if not args.skip_training:
        print("training throughput", file=sys.stderr)
        training = measure_training(config, epochs=1 if args.quick else 2)
    rss = []
    if not args.skip_rss:
        print("peak RSS", file=sys.stderr)
        rss = measure_rss(detector, pool, QUICK_RSS_COUNTS if args.quick else RSS_COUNTS)
    load_after = os.getloadavg()[0]

    print_tables(scoring, training, rss, (load_before, load_after))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scoring": {
                        k: {"images_per_second": w, "images_per_cpu_second": c}
                        for k, (w, c) in scoring.items()
                    },
                    "training": training,
                    "rss": rss,
                    "load_average": [load_before, load_after],
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
