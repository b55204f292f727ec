"""Command line: ``python -m davae train | score | evaluate | compare | worker``.

Every command prints one line starting with ``error:`` and exits with status 2
on a user error (bad input, settings or model file), and 1 on anything else.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from davae.errors import DavaeError

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "image_path",
    "folder",
    "file_name",
    "sha256",
    "width",
    "height",
    "pred_score",
    "recon_score",
    "latent_distance",
    "recon_mean",
    "recon_max",
    "latent_euclidean",
    "latent_mahalanobis",
    "latent_multiscale",
    "pred_label",
    "heatmap",
    "error",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from davae.config import DetectorConfig

    default = DetectorConfig()
    parser.add_argument(
        "data", nargs="+", help="folders, ZIP archives or image files of normal parts"
    )
    parser.add_argument("--out", required=True, help="path of the model bundle to write (.pt)")
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"maximum training epochs (default {default.train.epochs})",
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        help=f"model input size in pixels, a multiple of 16 (default {default.vae.image_size})",
    )
    parser.add_argument(
        "--latent-dim",
        type=_positive_int,
        help=f"latent vector size (default {default.vae.latent_dim})",
    )
    parser.add_argument(
        "--width",
        type=_positive_int,
        help=f"channels of the first encoder stage (default {default.vae.width})",
    )
    parser.add_argument(
        "--augment-iterations",
        type=int,
        help="augmented copies of each image per epoch, 0 for none "
        f"(default {default.augment.iterations})",
    )
    parser.add_argument(
        "--no-augment",
        action="append",
        default=[],
        choices=("rotate90", "hflip", "vflip", "brightness", "contrast", "noise"),
        help="switch one augmentation off; repeat for several",
    )
    parser.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help=f"1 grayscale or 3 RGB (default {default.vae.channels})",
    )
    parser.add_argument(
        "--mode",
        choices=("whole", "patch"),
        help=f"whole images, or patches for high-resolution images (default {default.train.mode})",
    )
    parser.add_argument(
        "--patch-scale",
        type=float,
        help="in patch mode, scale images by this factor before cropping "
        f"(default {default.train.patch_scale:g})",
    )
    parser.add_argument(
        "--normalize",
        choices=("none", "flatfield"),
        help="illumination normalisation before the model "
        f"(default {default.preprocess.normalize})",
    )
    parser.add_argument(
        "--error-normalization",
        choices=("none", "pixel"),
        help="standardise each pixel of the error map by its statistics on normal images "
        f"(default {default.scoring.error_normalization})",
    )
    parser.add_argument(
        "--latent-metric",
        choices=("multiscale", "mahalanobis", "euclidean"),
        help=f"latent distance that is thresholded (default {default.scoring.latent_metric})",
    )
    parser.add_argument(
        "--target-fpr",
        type=float,
        help="false-alarm rate the thresholds aim at on held-out normals "
        f"(default {default.scoring.target_fpr:g})",
    )
    parser.add_argument("--seed", type=int, help=f"random seed (default {default.train.seed})")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help=f"default {default.train.device}"
    )


def config_from_args(args: argparse.Namespace):
    """Build a DetectorConfig from the default with the command-line overrides."""
    from davae.config import DetectorConfig

    overrides = {
        "train__epochs": args.epochs,
        "vae__image_size": args.image_size,
        "vae__latent_dim": args.latent_dim,
        "vae__width": args.width,
        "vae__channels": args.channels,
        "augment__iterations": args.augment_iterations,
        "train__mode": args.mode,
        "train__patch_scale": args.patch_scale,
        "preprocess__normalize": args.normalize,
        "scoring__error_normalization": args.error_normalization,
        "scoring__latent_metric": args.latent_metric,
        "scoring__target_fpr": args.target_fpr,
        "train__seed": args.seed,
        "train__device": args.device,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    for name in args.no_augment:
        overrides[f"augment__{name}"] = False
    config = DetectorConfig().replace(**overrides) if overrides else DetectorConfig()
    config.validate()
    return config


def require_paths(paths: Sequence[str]) -> None:
    """Raise DavaeError ``input_not_found`` naming every path that does not exist.

    A mistyped path on the command line is a usage error, so it stops the
    command before any work instead of becoming one rejected row.
    """
    missing = [path for path in paths if not Path(path).exists()]
    if missing:
        names = ", ".join(missing)
        raise DavaeError("input_not_found", f"{names}: no such file or folder", name=names)


def command_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from davae.bundle import save_bundle
    from davae.dataset import load_images
    from davae.training import train_detector

    config = config_from_args(args)
    require_paths(args.data)
    loaded = load_images(args.data, config.vae.channels)
    for rejected in loaded.rejected:
        print(f"rejected: {rejected.relative_path}: {rejected.message}", file=sys.stderr)
    print(
        f"{len(loaded.pixels)} images loaded, {len(loaded.rejected)} rejected, "
        f"{len(loaded.ignored)} ignored",
        file=sys.stderr,
    )

    # Created on the first report, so that an error found before training
    # (too few images) is not preceded by an empty bar.
    bars: list[tqdm] = []

    def on_progress(progress) -> None:
        if not bars:
            bars.append(
                tqdm(total=config.train.epochs, unit="epoch", desc="training", file=sys.stderr)
            )
        bar = bars[0]
        if progress.phase == "training":
            bar.update(progress.epoch - bar.n)
            bar.set_postfix(train=f"{progress.train_loss:.1f}", val=f"{progress.val_loss:.1f}")
        elif progress.phase == "calibrating":
            bar.set_description("calibrating")

    try:
        detector = train_detector(
            loaded.pixels, config, progress=on_progress, fingerprint=loaded.fingerprint()
        )
    finally:
        for bar in bars:
            bar.close()
    digest = save_bundle(detector, args.out)
    t = detector.thresholds
    print(f"model written to {args.out} (sha256 {digest[:12]})")
    print(
        f"epochs run {len(detector.history)}, {detector.metadata['train_seconds']:.1f} s; "
        f"thresholds: recon_{t.recon_reduction} {t.recon:.6g}, latent_{t.latent_metric} "
        f"{t.latent:.6g} (target false-alarm rate {t.target_fpr:g})"
    )
    return 0


def _display_path(source: str, relative: str) -> str:
    if source and Path(source).is_dir():
        return str(Path(source) / relative)
    if source and source.lower().endswith(".zip"):
        return f"{source}/{relative}"
    return source or relative


def _unique_heatmap_name(relative_path: str, used_names: set[str]) -> str:
    """Name a heatmap after its image, numbering it when inputs share a path.

    Files given as separate arguments keep only their names, so ``a/x.png``
    and ``b/x.png`` are both ``x.png``. The second heatmap becomes
    ``x.png.2.heatmap.png`` instead of overwriting the first. Names are
    compared without case, because a case-insensitive file system would
    also overwrite ``X.png`` with ``x.png``.
    """
    name = relative_path + ".heatmap.png"
    number = 1
    while name.casefold() in used_names:
        number += 1
        name = f"{relative_path}.{number}.heatmap.png"
    used_names.add(name.casefold())
    return name


def command_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from davae.bundle import load_bundle
    from davae.detector import ScoredFile
    from davae.heatmap import overlay
    from davae.inputs import Ignored, iter_inputs

    detector = load_bundle(args.model)
    require_paths(args.inputs)
    if args.recon_threshold or args.latent_threshold:
        detector = detector.with_thresholds(
            args.recon_threshold or detector.thresholds.recon,
            args.latent_threshold or detector.thresholds.latent,
        )
    heatmap_dir = Path(args.heatmaps) if args.heatmaps else None
    if heatmap_dir is not None:
        heatmap_dir.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"normal": 0, "anomalous": 0, "rejected": 0, "ignored": 0}
    heatmap_names: set[str] = set()
    with open(out_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=SCORE_COLUMNS)
        writer.writeheader()
        bar = tqdm(unit="img", desc="scoring", file=sys.stderr)
        for item in detector.score_items(iter_inputs(args.inputs)):
            bar.update(1)
            row = dict.fromkeys(SCORE_COLUMNS, "")
            row.update(
                image_path=_display_path(
                    item.source if not isinstance(item, ScoredFile) else item.file.source,
                    item.relative_path,
                ),
                folder=item.file.folder if isinstance(item, ScoredFile) else item.folder,
                file_name=item.file.name if isinstance(item, ScoredFile) else item.name,
            )
            if isinstance(item, ScoredFile):
                result = item.result
                label = "anomalous" if result.anomalous else "normal"
                counts[label] += 1
                row.update(
                    sha256=item.file.sha256,
                    width=item.image.width,
                    height=item.image.height,
                    pred_score=f"{result.combined:.6g}",
                    recon_score=f"{result.recon_score:.6g}",
                    latent_distance=f"{result.latent_score:.6g}",
                    recon_mean=f"{result.raw.recon_mean:.6g}",
                    recon_max=f"{result.raw.recon_max:.6g}",
                    latent_euclidean=f"{result.raw.latent_euclidean:.6g}",
                    latent_mahalanobis=f"{result.raw.latent_mahalanobis:.6g}",
                    pred_label=label,
                )
                if result.raw.latent_multiscale is not None:
                    row["latent_multiscale"] = f"{result.raw.latent_multiscale:.6g}"
                if heatmap_dir is not None:
                    name = _unique_heatmap_name(item.relative_path, heatmap_names)
                    target = heatmap_dir / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    overlay(
                        item.image.pixels, result.analysis.error_map, detector.heatmap_scale
                    ).save(target)
                    row["heatmap"] = name
            elif isinstance(item, Ignored):
                counts["ignored"] += 1
                row.update(error=f"ignored: {item.reason}")
            else:
                counts["rejected"] += 1
                row.update(error=item.message)
            writer.writerow(row)
        bar.close()
    print(
        f"{counts['normal'] + counts['anomalous']} scored ({counts['anomalous']} anomalous), "
        f"{counts['rejected']} rejected, {counts['ignored']} ignored; results in {out_path}"
    )
    return 0


def _format_metric(value: float) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def print_report_table(report: dict, stream=None) -> None:
    stream = stream if stream is not None else sys.stdout
    header = ("score", "AUROC", "AUPR", "prec", "recall", "F1", "FPR", "R@1%", "R@5%")
    from davae.metrics import METRIC_NAMES as keys

    rows = [("combined", report["combined"]), *list(report["scores"].items())]
    print("  ".join(f"{h:>18}" if i == 0 else f"{h:>7}" for i, h in enumerate(header)), file=stream)
    for name, metrics in rows:
        cells = [f"{name:>18}"] + [f"{_format_metric(metrics[k]):>7}" for k in keys]
        print("  ".join(cells), file=stream)
    print(
        "per defect class (combined): "
        + ", ".join(
            f"{name} AUROC {_format_metric(entry['combined']['image_auroc'])} "
            f"recall {_format_metric(entry['combined']['recall'])}"
            for name, entry in report["per_class"].items()
        ),
        file=stream,
    )
    pixel = report["pixel_auroc"]
    if pixel is None or math.isnan(pixel):
        print("pixel AUROC: - (no masks in ground_truth/<defect>/)", file=stream)
    else:
        print(f"pixel AUROC: {_format_metric(pixel)}", file=stream)


def command_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from davae.bundle import load_bundle
    from davae.evaluation import evaluate
    from davae.worker_io import json_safe

    detector = load_bundle(args.model)
    bars: list[tqdm] = []  # created on the first report, after the dataset is checked

    def on_progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="evaluating", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        report = evaluate(detector, args.dataset, progress=on_progress)
    finally:
        for bar in bars:
            bar.close()
    report["model"] = str(args.model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # Strict JSON: a metric that is undefined (no masks, one class) is written as null.
    text = json.dumps(json_safe(report), indent=2, allow_nan=False)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print_report_table(report)
    print(f"report written to {args.out}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from davae.config import DetectorConfig
    from davae.study import run_study
    from davae.study_plan import StudySettings, quick_config

    config = quick_config() if args.quick else DetectorConfig()
    if args.epochs:
        config = config.replace(train__epochs=args.epochs)
    settings = StudySettings(
        config=config,
        ablation=not args.skip_ablation,
        imbalance=not args.skip_imbalance,
        seeds=args.seeds,
        labelled_defects_per_class=args.labelled_defects,
        quick=args.quick,
    )
    # The bar starts with the first report, after the dataset and settings
    # are checked, so that an invalid input prints only the error line.
    bars: list[tqdm] = []

    def on_progress(step: int, total: int, message: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="step", file=sys.stderr))
        bars[0].set_description(message, refresh=False)
        bars[0].update(step - bars[0].n)

    try:
        result = run_study(
            args.dataset, args.out, settings, cache_dir=args.cache, progress=on_progress
        )
    finally:
        for bar in bars:
            bar.close()
    header = ("method", "AUROC", "AUPR", "prec", "recall", "F1", "FPR")
    keys = ("image_auroc", "aupr", "precision", "recall", "f1", "fpr")
    print(f"{header[0]:>18}  " + "  ".join(f"{h:>7}" for h in header[1:]))
    for _, row in result.rows("main").iterrows():
        cells = "  ".join(f"{_format_metric(row[key]):>7}" for key in keys)
        print(f"{row['method']:>18}  {cells}")
    if args.quick:
        print("quick smoke run: a small model trained briefly, not a measure of detection quality")
    print(f"results written to {result.directory} (results.csv, summary.md, HTML figures)")
    return 0


def command_worker(args: argparse.Namespace) -> int:
    from davae.worker import Worker, WorkerSettings
    from storage.db import open_storage

    # A long-running process logs its starts, stops and job failures even without -v.
    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    settings = WorkerSettings(poll_interval_s=args.poll, stale_after_s=args.stale_after)
    worker = Worker(open_storage(), settings)
    try:
        worker.run(until_idle=args.once)
    except KeyboardInterrupt:
        worker.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m davae",
        description=(
            "DA-VAE Inspector: train an anomaly detector on normal images, score batches, evaluate."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log one line per phase")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model bundle on normal images",
        description="Train a detector on normal images only.",
    )
    _add_train_options(train)
    train.set_defaults(handler=command_train)

    score = commands.add_parser(
        "score",
        help="score images and write a CSV",
        description="Score images with a trained model bundle.",
    )
    score.add_argument("model", help="model bundle (.pt) written by train")
    score.add_argument("inputs", nargs="+", help="image files, folders or ZIP archives")
    score.add_argument("--out", required=True, help="CSV file to write")
    score.add_argument("--heatmaps", help="folder to write heatmap overlays (PNG) into")
    score.add_argument(
        "--recon-threshold", type=float, help="override the reconstruction threshold"
    )
    score.add_argument(
        "--latent-threshold", type=float, help="override the latent-distance threshold"
    )
    score.set_defaults(handler=command_score)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a model on an MVTec-style dataset",
        description="Evaluate on test/good and test/<defect> folders.",
    )
    evaluate.add_argument("model", help="model bundle (.pt)")
    evaluate.add_argument(
        "dataset", help="dataset folder with train/good, test/good, test/<defect>"
    )
    evaluate.add_argument("--out", required=True, help="JSON report to write")
    evaluate.set_defaults(handler=command_evaluate)

    compare = commands.add_parser(
        "compare",
        help="compare DA-VAE with conventional detectors on an MVTec-style dataset",
        description=(
            "Train and evaluate DA-VAE, the same VAE without augmentation, a one-class SVM, "
            "an isolation forest, PCA reconstruction error and a random forest on one split; "
            "run the augmentation ablation and the imbalance study; write results.csv, "
            "summary.md and HTML figures."
        ),
    )
    compare.add_argument("dataset", help="dataset folder with train/good, test/good, test/<defect>")
    compare.add_argument("--out", required=True, help="folder to write the study into")
    compare.add_argument(
        "--epochs",
        type=_positive_int,
        help="maximum training epochs of every DA-VAE model (default: the DA-VAE default)",
    )
    compare.add_argument(
        "--seeds",
        type=_positive_int,
        default=5,
        help="subsampling seeds per defect share in the imbalance study (default 5)",
    )
    compare.add_argument(
        "--labelled-defects",
        type=_positive_int,
        default=10,
        help="labelled defect images per class for the random forest, at most half of "
        "each class; they are left out of every method's evaluation (default 10)",
    )
    compare.add_argument(
        "--skip-ablation", action="store_true", help="skip the augmentation ablation"
    )
    compare.add_argument("--skip-imbalance", action="store_true", help="skip the imbalance study")
    compare.add_argument(
        "--cache",
        help="folder for trained models, shared between studies (default OUT/cache)",
    )
    compare.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: a small DA-VAE trained for a few epochs; the summary lists its settings",
    )
    compare.set_defaults(handler=command_compare)

    worker = commands.add_parser(
        "worker",
        help="run the jobs queued by the dashboard (training, scoring, evaluation)",
        description=(
            "Claim queued jobs from the database in DAVAE_HOME (or DAVAE_DATABASE_URL) and run "
            "them one at a time, until interrupted."
        ),
    )
    worker.add_argument(
        "--once", action="store_true", help="exit when the queue is empty instead of waiting"
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=1.0,
        help="seconds between looks at an empty queue (default 1)",
    )
    worker.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="seconds without a heartbeat after which a running job is re-queued (default 60)",
    )
    worker.set_defaults(handler=command_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.handler(args)
    except DavaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the CLI's last line of defence: one line, non-zero exit
        logger.debug("unexpected failure", exc_info=True)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
