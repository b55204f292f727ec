"""The job queue: enqueue, claim, progress, cancel, finish, stale workers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from storage_helpers import make_batch

from davae.errors import DavaeError
from storage import audit, jobs
from storage.audit import AuditAction
from storage.models import JobKind, JobStatus, utc_now


def enqueue(database, kind=JobKind.SCORE, **links):
    return database.run_write(
        lambda session: jobs.enqueue_job(session, kind, {"chunk_size": 64}, "ana", **links),
        action="enqueue",
    )


def claim(database, worker_id, kinds=None):
    return database.run_write(
        lambda session: jobs.claim_next_job(session, worker_id, kinds=kinds), action="claim"
    )


def load(database, job_id):
    with database.read() as session:
        return jobs.get_job(session, job_id)


def test_enqueue_and_claim_oldest_first(database, model):
    batch = make_batch(database, model.id)
    first = enqueue(database, batch_id=batch.id)
    second = enqueue(database, JobKind.TRAIN)
    claimed = claim(database, "worker-1")
    assert claimed.id == first.id
    assert claimed.status == JobStatus.RUNNING
    assert claimed.worker_id == "worker-1"
    assert claimed.attempts == 1
    assert claimed.started_at is not None
    assert claimed.heartbeat_at is not None
    assert claimed.params == {"chunk_size": 64}
    assert claimed.batch_id == batch.id
    assert claim(database, "worker-2").id == second.id
    assert claim(database, "worker-3") is None


def test_claim_filters_by_kind(database):
    enqueue(database, JobKind.TRAIN)
    evaluate = enqueue(database, JobKind.EVALUATE)
    assert claim(database, "gpu", kinds=[JobKind.EVALUATE]).id == evaluate.id
    assert claim(database, "gpu", kinds=[JobKind.SCORE]) is None


def test_progress_and_heartbeat(database):
    job = enqueue(database)
    claim(database, "w1")
    before = load(database, job.id).heartbeat_at
    keep_going = database.run_write(
        lambda session: jobs.update_progress(
            session, job.id, "w1", {"done": 3, "total": 10, "message": "scoring"}
        ),
        action="progress",
    )
    assert keep_going
    loaded = load(database, job.id)
    assert loaded.progress == {"done": 3, "total": 10, "message": "scoring"}
    assert loaded.heartbeat_at >= before
    assert database.run_write(lambda s: jobs.heartbeat(s, job.id, "w1"), action="beat")


def test_progress_from_other_worker_is_refused(database):
    job = enqueue(database)
    claim(database, "w1")
    refused = database.run_write(
        lambda session: jobs.update_progress(session, job.id, "w2", {"done": 1}), action="p"
    )
    assert not refused
    assert load(database, job.id).progress == {}


def test_cancel_running_job_tells_worker(database):
    job = enqueue(database)
    claim(database, "w1")
    database.run_write(lambda s: jobs.request_cancel(s, job.id, "bob"), action="cancel")
    assert load(database, job.id).status == JobStatus.RUNNING
    keep_going = database.run_write(
        lambda session: jobs.update_progress(session, job.id, "w1", {"done": 1}), action="p"
    )
    assert not keep_going
    assert database.run_write(
        lambda s: jobs.finish_job(s, job.id, "w1", JobStatus.CANCELLED), action="finish"
    )
    loaded = load(database, job.id)
    assert loaded.status == JobStatus.CANCELLED
    assert loaded.finished_at is not None


def test_cancel_queued_job_at_once(database):
    job = enqueue(database)
    cancelled = database.run_write(lambda s: jobs.request_cancel(s, job.id, "bob"), action="c")
    assert cancelled.status == JobStatus.CANCELLED
    assert claim(database, "w1") is None
    with database.read() as session:
        entry = audit.list_entries(session, action=AuditAction.JOB_CANCEL_REQUEST)[0]
    assert (entry.actor, entry.entity_id) == ("bob", job.id)


def test_finish_done_with_result(database):
    job = enqueue(database, JobKind.TRAIN)
    claim(database, "w1")
    assert database.run_write(
        lambda s: jobs.finish_job(s, job.id, "w1", JobStatus.DONE, result={"model_version_id": 7}),
        action="finish",
    )
    loaded = load(database, job.id)
    assert loaded.status == JobStatus.DONE
    assert loaded.result == {"model_version_id": 7}
    with database.read() as session:
        entries = [e for e in reversed(audit.list_entries(session)) if e.entity_type == "job"]
    assert [(e.action, e.details["kind"]) for e in entries] == [
        (AuditAction.JOB_ENQUEUE, "train"),
        (AuditAction.JOB_FINISH, "train"),
    ]
    assert entries[1].details["status"] == "done"


def test_fail_keeps_error_code(database):
    job = enqueue(database)
    claim(database, "w1")
    error = DavaeError("stored_file_missing", "the stored file x is missing", path="x")
    database.run_write(
        lambda s: jobs.finish_job(s, job.id, "w1", JobStatus.FAILED, error=error), action="fail"
    )
    loaded = load(database, job.id)
    assert (loaded.status, loaded.error_code) == (JobStatus.FAILED, "stored_file_missing")
    assert loaded.error_message == "the stored file x is missing"


def test_finish_requires_final_status(database):
    job = enqueue(database)
    claim(database, "w1")
    with pytest.raises(ValueError), database.write() as session:
        jobs.finish_job(session, job.id, "w1", JobStatus.RUNNING)


def test_stale_job_requeued_then_failed(database):
    job = enqueue(database)
    claim(database, "w1")
    later = utc_now() + timedelta(minutes=10)
    with database.read() as session:
        assert [j.id for j in jobs.find_stale_jobs(session, timedelta(minutes=5), now=later)] == [
            job.id
        ]
        assert jobs.find_stale_jobs(session, timedelta(minutes=5)) == []

    requeued = database.run_write(
        lambda s: jobs.recover_stale_jobs(
            s, timedelta(minutes=5), "janitor", requeue=True, max_attempts=2, now=later
        ),
        action="recover",
    )
    assert [(j.id, j.status) for j in requeued] == [(job.id, JobStatus.QUEUED)]
    # The old worker wakes up: its job is gone.
    assert not database.run_write(lambda s: jobs.heartbeat(s, job.id, "w1"), action="beat")
    assert not database.run_write(
        lambda s: jobs.finish_job(s, job.id, "w1", JobStatus.DONE), action="finish"
    )

    assert claim(database, "w2").attempts == 2
    failed = database.run_write(
        lambda s: jobs.recover_stale_jobs(
            s, timedelta(minutes=5), "janitor", requeue=True, max_attempts=2, now=later
        ),
        action="recover",
    )
    assert [(j.status, j.error_code) for j in failed] == [(JobStatus.FAILED, "worker_lost")]


def test_list_recent_jobs(database, model):
    batch = make_batch(database, model.id)
    train = enqueue(database, JobKind.TRAIN)
    score = enqueue(database, JobKind.SCORE, batch_id=batch.id)
    claim(database, "w1")
    with database.read() as session:
        everything = [j.id for j in jobs.list_recent_jobs(session)]
        queued = [j.id for j in jobs.list_recent_jobs(session, statuses=[JobStatus.QUEUED])]
        for_batch = [j.id for j in jobs.list_recent_jobs(session, batch_id=batch.id)]
        trains = [j.id for j in jobs.list_recent_jobs(session, kinds=[JobKind.TRAIN])]
    assert everything == [score.id, train.id]
    assert queued == [score.id]
    assert for_batch == [score.id]
    assert trains == [train.id]


def test_unknown_job(database):
    with pytest.raises(DavaeError) as caught, database.read() as session:
        jobs.get_job(session, 99)
    assert caught.value.code == "job_not_found"


def test_two_workers_never_share_a_job(database):
    queued = [enqueue(database).id for _ in range(30)]
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def work(worker_id):
        try:
            while (job := claim(database, worker_id)) is not None:
                claimed[worker_id].append(job.id)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == queued
    assert len(set(everything)) == len(everything)
    for job_id in queued:
        assert load(database, job_id).attempts == 1
