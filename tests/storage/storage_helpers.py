"""Data builders shared by the storage tests and the scoring subprocess they start."""

from __future__ import annotations

from typing import Any

from storage import batches, registry
from storage.db import Database
from storage.files import FileStore
from storage.models import Batch, ImageStatus, ModelVersion
from storage.scores import NewScore, PendingImage

THRESHOLDS: dict[str, Any] = {
    "recon": 0.5,
    "latent": 4.0,
    "recon_reduction": "max",
    "latent_metric": "mahalanobis",
    "review_low": None,
    "review_high": None,
}


def register_model(database: Database, files: FileStore, name: str = "needles") -> ModelVersion:
    """Store a small bundle file and register it as the next version of ``name``."""
    source = files.home / "incoming" / f"{name}.pt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(f"bundle of {name}".encode())
    bundle = files.store_model_bundle(source)
    return database.run_write(
        lambda session: registry.register_model_version(
            session,
            name=name,
            bundle=bundle,
            config={"latent_dim": 16},
            thresholds=THRESHOLDS,
            created_by="ana",
        ),
        action="register model",
    )


def make_batch(database: Database, model_id: int, name: str = "line A") -> Batch:
    return database.run_write(
        lambda session: batches.create_batch(
            session, name=name, model_version_id=model_id, created_by="ana"
        ),
        action="create batch",
    )


def image_bytes(position: int) -> bytes:
    """Distinct content per position, so each image gets its own SHA-256."""
    return f"image at position {position}".encode()


def new_images(
    files: FileStore, start: int, count: int, *, rejected_every: int = 0
) -> list[batches.NewImage]:
    """Build records for ``count`` files from position ``start``, storing each original.

    With ``rejected_every`` = k, every k-th file is recorded as rejected instead.
    """
    records = []
    for position in range(start, start + count):
        if rejected_every and position % rejected_every == rejected_every - 1:
            records.append(
                batches.NewImage(
                    position=position,
                    file_name=f"broken_{position}.png",
                    folder="line_a",
                    status=ImageStatus.REJECTED,
                    rejection_code="truncated_image",
                    rejection_message=f"broken_{position}.png is truncated",
                    rejection_params={"name": f"broken_{position}.png", "detail": "EOF"},
                )
            )
            continue
        stored = files.store_original(image_bytes(position), "png")
        records.append(
            batches.NewImage(
                position=position,
                file_name=f"img_{position:05d}.png",
                folder="line_a",
                status=ImageStatus.PENDING,
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                width=64,
                height=48,
                format="PNG",
                stored_path=stored.relative_path,
            )
        )
    return records


def add_images(
    database: Database, files: FileStore, batch_id: int, count: int, *, rejected_every: int = 0
) -> list[int]:
    """Record ``count`` more files in a batch; return the new image ids."""
    return database.run_write(
        lambda session: batches.record_images(
            session,
            batch_id,
            new_images(
                files,
                batches.next_image_position(session, batch_id),
                count,
                rejected_every=rejected_every,
            ),
        ),
        action="record images",
    )


def fake_score(image: PendingImage) -> NewScore:
    """Deterministic scores from the upload position.

    recon cycles through 0.0 .. 0.9, so positions ending in 6-9 exceed the
    helpers' recon threshold of 0.5; the latent distances stay below 4.0.
    """
    recon = (image.position % 10) / 10
    return NewScore(
        image_id=image.id,
        recon_score=recon,
        latent_euclidean=1.0 + (image.position % 3),
        latent_mahalanobis=2.0 + (image.position % 2),
        combined_score=max(recon / THRESHOLDS["recon"], (2.0 + image.position % 2) / 4.0),
    )


def expected_auto_label(position: int) -> str:
    return "anomalous" if position % 10 > 5 else "normal"


def fake_score_chunk(chunk: list[PendingImage]) -> list[NewScore]:
    return [fake_score(image) for image in chunk]
