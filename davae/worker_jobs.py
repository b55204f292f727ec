"""Job functions of the worker, one per kind of job: train, score and evaluate.

Each handler receives the worker, the job's :class:`~davae.worker.JobContext`
and the claimed job, and returns the job's result (a JSON-serialisable dict).
It raises TrainingCancelled when the job should stop, and DavaeError for a
failure the user can act on; :class:`~davae.worker.Worker` finishes the job
accordingly. Audit entries come from the storage calls themselves.
"""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image as PILImage

from davae.errors import DavaeError, TrainingCancelled
from davae.inputs import Ignored, InputFile, Rejected, iter_inputs
from davae.worker import RECORD_GROUP, JobContext, Worker
from davae.worker_io import (
    MAX_LISTED_FILES,
    iter_job_inputs,
    json_safe,
    listed_file,
    write_display_files,
)
from storage import batches, jobs, registry
from storage.batches import NewImage
from storage.models import BatchStatus, ImageStatus, Job, JobKind
from storage.scores import BatchProgress, ImageRejection, NewScore, PendingImage, score_pending

logger = logging.getLogger(__name__)


# -- train ---------------------------------------------------------------------


def run_train_job(worker: Worker, context: JobContext, job: Job) -> dict[str, Any]:
    """Train a detector on the job's normal images and register it as a model version."""
    from davae.bundle import save_bundle
    from davae.config import DetectorConfig
    from davae.dataset import load_images
    from davae.training import train_detector

    params = job.params
    config = DetectorConfig.from_dict(params["config"])
    config.validate()
    storage = worker.storage
    context.report({"phase": "loading", "done": 0, "total": 0}, force=True)

    def on_loaded(count: int) -> None:
        context.check_cancel()
        context.report({"phase": "loading", "done": count, "total": 0})

    loaded = load_images(
        iter_job_inputs(params["inputs"], storage.files.home),
        config.vae.channels,
        worker.limits,
        progress=on_loaded,
    )
    files = {
        "rejected": [listed_file(item) for item in loaded.rejected[:MAX_LISTED_FILES]],
        "rejected_count": len(loaded.rejected),
        "ignored": [listed_file(item) for item in loaded.ignored[:MAX_LISTED_FILES]],
        "ignored_count": len(loaded.ignored),
        "image_count": len(loaded.pixels),
    }
    history: list[dict[str, float]] = []

    def on_progress(progress: Any) -> None:
        if progress.phase == "training":
            history.append(
                {
                    "epoch": progress.epoch,
                    "train_loss": progress.train_loss,
                    "val_loss": progress.val_loss,
                }
            )
        context.report(
            {
                **files,
                "phase": progress.phase,
                "done": progress.epoch,
                "total": progress.epochs,
                "eta_s": progress.eta_s,
                "images_per_second": progress.images_per_second,
                "history": history,
            },
            force=progress.phase != "training",
        )

    detector = train_detector(
        loaded.pixels,
        config,
        progress=on_progress,
        should_cancel=context.should_cancel,
        fingerprint=loaded.fingerprint(),
    )
    context.check_cancel()

    temporary = storage.files.home / "tmp" / f"job-{job.id}-{time.time_ns()}.pt"
    try:
        save_bundle(detector, temporary)
        stored = storage.files.store_model_bundle(temporary)
    finally:
        temporary.unlink(missing_ok=True)
    thresholds = {**detector.thresholds.to_dict(), "review_low": None, "review_high": None}
    model = storage.database.run_write(
        lambda session: registry.register_model_version(
            session,
            name=params["name"],
            bundle=stored,
            config=config.to_dict(),
            thresholds=thresholds,
            created_by=job.created_by,
            make_default=bool(params.get("make_default")),
        ),
        action=f"register the model of job {job.id}",
    )
    worker.remove_uploads(params.get("upload_dir"))
    return {
        **files,
        "model_version_id": model.id,
        "name": model.name,
        "version": model.version,
        "thresholds": thresholds,
        "history": detector.history,
        "calibration": {name: values.tolist() for name, values in detector.calibration.items()},
        "train_seconds": detector.metadata.get("train_seconds"),
    }


# -- score ---------------------------------------------------------------------


def _ingest_done(session: Any, batch_id: int) -> dict[str, Any] | None:
    """Return the progress of an earlier run that recorded every file of the batch, if any."""
    for earlier in jobs.list_recent_jobs(session, kinds=[JobKind.SCORE], batch_id=batch_id):
        if (earlier.progress or {}).get("ingest_done"):
            return earlier.progress
    return None


def _image_header(data: bytes) -> tuple[int | None, int | None, str | None]:
    """Read width, height and format from an image header without decoding the pixels."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return image.width, image.height, image.format
    except Exception:  # Pillow raises many types; the decode while scoring reports the reason
        return None, None, None


def _new_image(worker: Worker, item: InputFile | Rejected, position: int) -> NewImage:
    if isinstance(item, Rejected):
        return NewImage(
            position=position,
            file_name=item.name,
            folder=item.folder,
            status=ImageStatus.REJECTED,
            rejection_code=item.code,
            rejection_message=item.message,
            rejection_params=json_safe(item.params),
        )
    stored = worker.storage.files.store_original(item.data, PurePosixPath(item.name).suffix)
    width, height, image_format = _image_header(item.data)
    return NewImage(
        position=position,
        file_name=item.name,
        folder=item.folder,
        status=ImageStatus.PENDING,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        width=width,
        height=height,
        format=image_format,
        stored_path=stored.relative_path,
    )


def _record_files(
    worker: Worker, context: JobContext, job: Job, batch_id: int, start: int
) -> list[dict[str, Any]]:
    """Record every uploaded file from position ``start`` on; return the ignored files.

    Files before ``start`` were recorded by an earlier run and are skipped, so
    an interrupted recording continues where it stopped. The order of
    ``iter_inputs`` is fixed for fixed inputs, which makes the positions match.
    """
    database = worker.storage.database
    ignored: list[dict[str, Any]] = []
    group: list[NewImage] = []
    position = 0

    def flush() -> None:
        rows = list(group)
        database.run_write(
            lambda session: batches.record_images(session, batch_id, rows),
            action=f"record files of batch {batch_id}",
        )
        group.clear()

    inputs = iter_job_inputs(job.params["inputs"], worker.storage.files.home)
    for item in iter_inputs(inputs, worker.limits):
        context.check_cancel()
        if isinstance(item, Ignored):
            if len(ignored) < MAX_LISTED_FILES:
                ignored.append(listed_file(item))
            continue
        if position >= start:
            group.append(_new_image(worker, item, position))
        position += 1
        if len(group) >= RECORD_GROUP:
            flush()
        context.report(
            {"phase": "recording", "done": position, "total": 0, "ignored_count": len(ignored)}
        )
    if group:
        flush()
    return ignored


def _set_batch_status(
    worker: Worker, batch_id: int, status: BatchStatus, actor: str, error: BaseException | None
) -> None:
    """Move a batch to ``status`` where its current status allows it, else leave it."""
    try:
        worker.storage.database.run_write(
            lambda session: batches.set_batch_status(session, batch_id, status, actor, error=error),
            action=f"set batch {batch_id} {status.value}",
        )
    except DavaeError as conflict:
        if conflict.code != "batch_status_conflict":
            raise
        logger.info("batch %s stays as it is: %s", batch_id, conflict)


def _chunk_scorer(worker: Worker, model: Any, detector: Any):
    """Build the ``score_chunk`` function of ``score_pending`` for one model version."""
    from davae.imageio import decode_image

    files = worker.storage.files

    def score_chunk(images: list[PendingImage]) -> list[NewScore | ImageRejection]:
        results: list[NewScore | ImageRejection] = []
        decoded = []
        for image in images:
            try:
                data = files.read_bytes(image.stored_path)
                pixels = decode_image(
                    data, image.file_name, detector.channels, worker.limits
                ).pixels
            except DavaeError as error:
                results.append(
                    ImageRejection(image.id, error.code, str(error), json_safe(error.params))
                )
                continue
            decoded.append((image, pixels))
        scored = detector.score_pixels([pixels for _, pixels in decoded])
        for (image, pixels), result in zip(decoded, scored, strict=True):
            heatmap_path = write_display_files(
                worker.storage,
                model.id,
                image.sha256,
                pixels,
                result.analysis,
                detector.heatmap_scale,
                worker.settings.display_max_side,
            )
            results.append(
                NewScore(
                    image_id=image.id,
                    recon_score=result.recon_score,
                    latent_euclidean=result.raw.latent_euclidean,
                    latent_mahalanobis=result.raw.latent_mahalanobis,
                    latent_multiscale=result.raw.latent_multiscale,
                    combined_score=result.combined,
                    heatmap_path=heatmap_path,
                )
            )
        return results

    return score_chunk


def run_score_job(worker: Worker, context: JobContext, job: Job) -> dict[str, Any]:
    """Record a batch's uploaded files, then score its pending images chunk by chunk."""
    database = worker.storage.database
    batch_id = int(job.batch_id or job.params["batch_id"])
    actor = job.created_by
    with database.read() as session:
        batch = batches.get_batch(session, batch_id)
        model = registry.get_model_version(session, batch.model_version_id)
        earlier = _ingest_done(session, batch_id)
        start = batches.next_image_position(session, batch_id)

    try:
        if earlier is None:
            ignored = _record_files(worker, context, job, batch_id, start)
        else:
            ignored = earlier.get("ignored", [])
        detector = worker.detector_for(model.bundle_path, model.bundle_sha256)
    except TrainingCancelled:
        _set_batch_status(worker, batch_id, BatchStatus.CANCELLED, actor, None)
        raise
    except Exception as error:
        _set_batch_status(worker, batch_id, BatchStatus.FAILED, actor, error)
        raise

    with database.read() as session:
        progress = BatchProgress.of(batches.get_batch(session, batch_id))
    base = {"phase": "scoring", "ingest_done": True, "ignored": ignored}
    context.report({**base, "done": progress.done, "total": progress.image_count}, force=True)
    started, scored_before = time.monotonic(), progress.scored

    def on_progress(update: BatchProgress) -> None:
        elapsed = time.monotonic() - started
        context.report(
            {
                **base,
                "done": update.done,
                "total": update.image_count,
                "scored": update.scored,
                "rejected": update.rejected,
                "anomalous": update.anomalous,
                "images_per_second": (update.scored - scored_before) / elapsed if elapsed else 0,
            }
        )

    final = score_pending(
        database,
        batch_id,
        _chunk_scorer(worker, model, detector),
        actor=actor,
        chunk_size=worker.settings.score_chunk_size,
        on_progress=on_progress,
        should_cancel=context.should_cancel,
    )
    if final.status == BatchStatus.CANCELLED:
        raise TrainingCancelled()
    worker.remove_uploads(job.params.get("upload_dir"))
    return {
        "batch_id": batch_id,
        "image_count": final.image_count,
        "scored": final.scored,
        "rejected": final.rejected,
        "anomalous": final.anomalous,
        "ignored": ignored,
    }


# -- evaluate ------------------------------------------------------------------


def _study_settings(params: dict[str, Any]) -> Any:
    from davae.config import DetectorConfig
    from davae.study_plan import StudySettings, quick_config

    quick = bool(params.get("quick"))
    config = quick_config() if quick else DetectorConfig()
    if params.get("epochs"):
        config = config.replace(train__epochs=int(params["epochs"]))
    return StudySettings(
        config=config,
        ablation=bool(params.get("ablation", True)),
        imbalance=bool(params.get("imbalance", True)),
        seeds=int(params.get("seeds", 5)),
        labelled_defects_per_class=int(params.get("labelled_defects", 10)),
        quick=quick,
    )


def _run_study(worker: Worker, context: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    from davae.study import run_study
    from davae.study_plan import StudySettings

    home = worker.storage.files.home
    settings: StudySettings = _study_settings(params)
    out_dir = worker.storage.files.resolve(params["out_dir"])

    def on_progress(step: int, total: int, message: str) -> None:
        context.report({"phase": "study", "done": step, "total": total, "message": message})

    result = run_study(
        params["dataset"],
        out_dir,
        settings,
        cache_dir=home / "studies" / "cache",
        progress=on_progress,
        should_cancel=context.should_cancel,
        limits=worker.limits,
    )
    return {"study_dir": params["out_dir"], "rows": len(result.results)}


def _evaluate_model(worker: Worker, context: JobContext, job: Job) -> dict[str, Any]:
    from davae.evaluation import evaluate

    params = job.params
    database = worker.storage.database
    with database.read() as session:
        model = registry.get_model_version(session, int(params["model_version_id"]))
    detector = worker.detector_for(model.bundle_path, model.bundle_sha256)

    def on_progress(done: int, total: int) -> None:
        context.check_cancel()
        context.report({"phase": "evaluating", "done": done, "total": total})

    report = evaluate(detector, params["dataset"], worker.limits, progress=on_progress)
    report["rejected"] = report.get("rejected", [])[:MAX_LISTED_FILES]
    report["evaluated_at"] = datetime.now(UTC).isoformat()
    metrics = json_safe(report)
    database.run_write(
        lambda session: registry.update_model_metrics(session, model.id, metrics, job.created_by),
        action=f"store the metrics of model version {model.id}",
    )
    return {"model_version_id": model.id, "dataset": str(Path(params["dataset"]))}


def run_evaluate_job(worker: Worker, context: JobContext, job: Job) -> dict[str, Any]:
    """Run a comparative study (``mode = "compare"``) or measure one model (``"model"``)."""
    mode = job.params.get("mode")
    if mode == "compare":
        return _run_study(worker, context, job.params)
    if mode == "model":
        return _evaluate_model(worker, context, job)
    raise DavaeError(
        "invalid_setting",
        f"evaluation job {job.id} has mode {mode!r}; expected 'compare' or 'model'",
        setting="mode",
        value=mode,
        expected="compare or model",
    )


JOB_HANDLERS = {
    JobKind.TRAIN: run_train_job,
    JobKind.SCORE: run_score_job,
    JobKind.EVALUATE: run_evaluate_job,
}
