"""A scoring job that test_storage_resume kills part-way through.

Usage: python storage_scoring_worker.py URL HOME BATCH_ID MODE CHUNK_SIZE STOP_AFTER

MODE "score" scores the batch's pending images; MODE "record" records new
files. It prints "committed N" after each committed chunk, so the test can
kill it at a known point. After STOP_AFTER chunks the job hangs, as if a long
model step were running.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from storage_helpers import add_images, fake_score_chunk

from storage import scores
from storage.db import StorageSettings, open_storage

HANG_S = 600  # far longer than the test waits before it kills the process


def main(url: str, home: str, batch_id: int, mode: str, chunk_size: int, stop_after: int) -> None:
    storage = open_storage(StorageSettings(home=Path(home), database_url=url), upgrade=False)
    committed = 0

    def report() -> None:
        nonlocal committed
        committed += 1
        print(f"committed {committed}", flush=True)

    def hang_when_done() -> None:
        if committed >= stop_after:
            time.sleep(HANG_S)

    if mode == "record":
        while True:
            hang_when_done()
            add_images(storage.database, storage.files, batch_id, chunk_size)
            report()

    def score_chunk(chunk):
        hang_when_done()
        return fake_score_chunk(chunk)

    scores.score_pending(
        storage.database,
        batch_id,
        score_chunk,
        actor="worker",
        chunk_size=chunk_size,
        on_progress=lambda progress: report(),
    )


if __name__ == "__main__":
    url, home, batch_id, mode, chunk_size, stop_after = sys.argv[1:7]
    main(url, home, int(batch_id), mode, int(chunk_size), int(stop_after))
