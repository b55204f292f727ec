"""Retry a write transaction when the database reports a transient conflict.

SQLite reports SQLITE_BUSY or SQLITE_LOCKED when another connection holds the
write lock longer than the busy timeout, or when a transaction's snapshot went
stale before it could write. PostgreSQL reports serialization failures,
deadlocks, lock timeouts and dropped connections. In each case the whole
transaction is rolled back and can be run again from the start, so the retry
wraps the unit of work, not a single statement.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from davae.errors import DavaeError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Primary result codes (the low byte of extended codes such as SQLITE_BUSY_SNAPSHOT).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

# SQLSTATE values after which PostgreSQL expects the client to retry the transaction.
_POSTGRES_RETRY_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown (server restarting)
    "57P03",  # cannot_connect_now (server starting up)
}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a write that hit a transient conflict.

    Delays grow exponentially from ``first_delay_s`` up to ``max_delay_s``,
    each with random jitter between half and the full value, so that writers
    that collided do not collide again in lockstep.
    """

    attempts: int = 5
    first_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")

    def delay_s(self, attempt: int) -> float:
        """Return the pause before the attempt after ``attempt`` (1-based), in seconds."""
        ceiling = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def is_transient(error: BaseException) -> bool:
    """Return whether running the failed transaction again may succeed."""
    if not isinstance(error, OperationalError | InterfaceError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return sqlite_code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _POSTGRES_RETRY_STATES or sqlstate.startswith("08")
    # psycopg raises OperationalError without a SQLSTATE when it cannot connect.
    return type(original).__module__.startswith("psycopg")


def describe_failure(error: BaseException) -> str:
    """Return a short English reason for a failed write, without driver jargon."""
    if is_transient(error):
        original = getattr(error, "orig", None)
        if getattr(original, "sqlite_errorcode", None) is not None:
            return "the database stayed busy with other writes; try again in a moment"
        return "the database server was unreachable or too busy; try again in a moment"
    return f"the database reported an error: {getattr(error, 'orig', None) or error}"


def write_failed(action: str, error: BaseException) -> DavaeError:
    """Build the error for a write that did not complete after its retries."""
    detail = describe_failure(error)
    return DavaeError(
        "write_failed",
        f"could not save ({action}): {detail}",
        action=action,
        detail=detail,
    )


def run_with_retry(
    begin: Callable[[], AbstractContextManager[Session]],
    work: Callable[[Session], T],
    *,
    policy: RetryPolicy,
    action: str,
    on_failure: Callable[[BaseException], DavaeError] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work`` in a transaction from ``begin``, retrying transient conflicts.

    ``begin`` opens a unit of work that commits on success and rolls back on
    an exception. ``work`` must be safe to run again from the start, because
    each retry repeats it in a new transaction. When the last attempt fails,
    or a database error is not transient (a disk error, a refused login), the
    error from ``on_failure`` is raised, by default ``write_failed``.
    Other exceptions, including ``DavaeError`` from ``work``, propagate at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            with begin() as session:
                return work(session)
        except (OperationalError, InterfaceError) as error:
            if not is_transient(error) or attempt == policy.attempts:
                logger.error(
                    "%s failed after %d attempt(s): %s", action, attempt, error.orig or error
                )
                raise (on_failure or _default_failure(action))(error) from error
            delay = policy.delay_s(attempt)
            logger.warning(
                "%s: transient database error (%s); retry %d of %d in %.2f s",
                action,
                error.orig or error,
                attempt,
                policy.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def _default_failure(action: str) -> Callable[[BaseException], DavaeError]:
    return lambda error: write_failed(action, error)
