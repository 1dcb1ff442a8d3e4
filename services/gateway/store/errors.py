"""Errors raised by the job store, and the translation of driver errors into them.

The gRPC layer maps :class:`StoreUnavailable` to ``UNAVAILABLE`` (reason
``DATABASE_UNAVAILABLE``), so clients retry; anything else from the database is a
:class:`StoreError` and becomes ``INTERNAL``.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


class StoreError(Exception):
    """Base class of every error the job store raises on purpose."""


class RequestIdReused(StoreError):
    """A submit reused a request_id with different parameters (a different request hash)."""

    def __init__(self, request_id: str, existing_job_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used by job {existing_job_id} "
            "with different parameters"
        )
        self.request_id = request_id
        self.existing_job_id = existing_job_id


class JobNotFound(StoreError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class StoreUnavailable(StoreError):
    """The database cannot be reached (or the store is closed); retrying later may work."""


# Errors meaning "the server or the connection is gone or overloaded", as opposed
# to "this statement is wrong". SQLite reports a locked or unopenable file as
# OperationalError; asyncpg raises OSError while connecting.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,  # e.g. asyncpg's "connection is closed"
    sa_exc.TimeoutError,  # pool checkout timed out
    OSError,  # connection refused or reset, host unreachable
    TimeoutError,
)
# PostgreSQL SQLSTATE classes with the same meaning: 08 connection exception,
# 53 insufficient resources (too many connections, disk full), 57P operator
# intervention (shutdown, "the database system is starting up"). asyncpg's
# exceptions carry `sqlstate`; SQLAlchemy wraps them (as `orig`, whose cause is
# the asyncpg exception).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the database is unreachable rather than wrong.

    Both are transient from a client's point of view: retrying later may work.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        orig = current.orig if isinstance(current, sa_exc.DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def translate(exc: Exception, what: str) -> StoreError:
    """A StoreError for a driver/SQLAlchemy error raised while doing `what`."""
    if isinstance(exc, StoreError):
        return exc
    if is_unavailable(exc):
        return StoreUnavailable(f"database unavailable while {what}: {one_line(exc)}")
    return StoreError(f"database error while {what}: {one_line(exc)}")


def one_line(exc: BaseException) -> str:
    # SQLAlchemy messages carry the SQL and a background link on further lines.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
