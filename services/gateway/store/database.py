"""Connections to SQLite or PostgreSQL behind one small interface.

The store's queries are written once, as synchronous SQLAlchemy Core code over a
``Connection``; a :class:`Database` runs such a function in a write transaction
or on an autocommit read connection:

* PostgreSQL: the asyncpg driver, through SQLAlchemy's asyncio engine
  (``AsyncConnection.run_sync``); a pool for readers, one connection for the writer.
* SQLite: the standard library driver in threads. Measured on this workload, one
  thread hop per *batch* instead of several per *statement* (which is what
  aiosqlite does) roughly halves a group commit's latency, and keeps the event
  loop free for the gRPC server while SQLite works and fsyncs (sqlite3 releases
  the GIL). One dedicated writer thread holds the only write connection; readers
  use a small pool of threads and connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

T = TypeVar("T")
Backend = Literal["sqlite", "postgresql"]

# How long a SQLite statement waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS = 5000
# SQLite reads: threads and connections (reads release the GIL inside SQLite).
SQLITE_READERS = 4
# PostgreSQL read pool, per gateway replica.
POSTGRES_READ_POOL = 10


class Database(Protocol):
    """Runs synchronous Core code against the database without blocking the event loop."""

    backend: Backend

    def describe(self) -> str:
        """Human description naming the file or host, for error messages and logs."""
        ...

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """fn(connection) inside one write transaction, committed when fn returns."""
        ...

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """fn(connection) on an autocommit connection (each statement sees committed data)."""
        ...

    async def dispose(self) -> None:
        """Close every connection; the Database is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed database URL."""

    url: URL
    backend: Backend
    schema: str | None  # PostgreSQL only

    @classmethod
    def parse(cls, raw: str) -> Target:
        """Accepts sqlite[+driver]:///PATH and postgresql[+driver]://... (see open_store)."""
        url = make_url(raw)
        backend = url.get_backend_name()
        if backend == "sqlite":
            if not url.database or url.database == ":memory:" or "mode=memory" in raw:
                raise ValueError(
                    "in-memory SQLite is not supported (the writer and the readers use "
                    "separate connections): give a file, e.g. sqlite:///var/dubbing.db"
                )
            # Whatever driver the URL names (sqlite:/// or sqlite+aiosqlite:///), SQLite is
            # driven through the standard library module; see the module docstring.
            return cls(url.set(drivername="sqlite+pysqlite"), "sqlite", None)
        if backend == "postgresql":
            schema = url.query.get("schema")
            if isinstance(schema, tuple):
                raise ValueError("the schema URL parameter may be given once")
            url = url.set(drivername="postgresql+asyncpg").difference_update_query(["schema"])
            return cls(url, "postgresql", schema or None)
        raise ValueError(
            f"unsupported database URL {url.render_as_string(hide_password=True)!r}: use "
            "sqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB"
        )

    def describe(self) -> str:
        if self.backend == "sqlite":
            return f"SQLite database file {Path(self.url.database or '').resolve()}"
        where = f"{self.url.host or 'localhost'}:{self.url.port or 5432}/{self.url.database or ''}"
        schema = f" (schema {self.schema})" if self.schema else ""
        return f"PostgreSQL at {where}{schema}"

    def connect(self, connect_timeout: float) -> Database:
        """The Database for this target; nothing is connected until first use."""
        if self.backend == "sqlite":
            return SqliteDatabase(self)
        return PostgresDatabase(self, connect_timeout)


# ---------------------------------------------------------------------------
# SQLite


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Stop the sqlite3 module from issuing its own (deferred, lazy) BEGINs: the
    # writer begins explicitly (below), readers run in autocommit. This also lets
    # the PRAGMAs run outside any transaction, as journal_mode requires.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer nor each other.
        _enable_wal(cursor)
        # FULL: the WAL is fsynced at every commit, so an accepted job survives
        # power loss (NORMAL only survives a process crash). Group commit pays for it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file, so only the first opener switches it. The
    # switch can answer SQLITE_BUSY without consulting busy_timeout while another
    # process (a second gateway starting, a migration) holds the file: retry it.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # a blocking connect hook, in the store's own thread


def resolve_future(future: asyncio.Future[T], result: T) -> None:
    """Set a result unless the waiting caller already gave up (cancelled)."""
    if not future.done():
        future.set_result(result)


def fail_future(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Set an exception unless the waiting caller already gave up (cancelled)."""
    if not future.done():
        future.set_exception(exc)


class SqliteDatabase:
    """SQLite through the standard library driver, in threads."""

    backend: Backend = "sqlite"

    def __init__(self, target: Target) -> None:
        self._target = target
        # check_same_thread=False: a pooled connection may be used by any reader
        # thread, though by one at a time (the pool guarantees that).
        args = {"check_same_thread": False}
        self._writer: Engine = sa.create_engine(
            target.url, pool_size=1, max_overflow=0, connect_args=args
        )
        self._reader: Engine = sa.create_engine(
            target.url,
            pool_size=SQLITE_READERS,
            max_overflow=0,
            isolation_level="AUTOCOMMIT",
            connect_args=args,
        )
        for engine in (self._writer, self._reader):
            event.listen(engine, "connect", _sqlite_on_connect)
        self._write_conn: Connection | None = None  # see _in_transaction
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite-writer")
        self._read_threads = ThreadPoolExecutor(
            SQLITE_READERS, thread_name_prefix="store-sqlite-reader"
        )

    def describe(self) -> str:
        return self._target.describe()

    def _in_transaction(self, fn: Callable[[Connection], T]) -> T:
        # Runs in the writer thread, the only user of self._write_conn. The connection
        # stays checked out between transactions: a checkout and checkin per batch (pool
        # bookkeeping, events, the rollback that resets a returned connection) cost more
        # CPU than the batch's own statements when batches are small.
        conn = self._write_conn
        if conn is None:
            conn = self._write_conn = self._writer.connect()
        try:
            with conn.begin():
                # pysqlite's own BEGIN is a no-op (see _sqlite_on_connect), so this is the
                # one that starts the transaction. IMMEDIATE takes the write lock at BEGIN,
                # waiting up to busy_timeout for another process; a deferred transaction
                # that reads and then writes can instead fail at once with SQLITE_BUSY when
                # another writer got in between. Issued here rather than from a "begin"
                # engine event: any connection event listener makes SQLAlchemy dispatch
                # events around every statement, a large share of a small batch's CPU.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return fn(conn)
        except BaseException:
            # Whatever went wrong, the next batch starts from a fresh checkout (the pool
            # replaces a connection that SQLAlchemy invalidated).
            self._write_conn = None
            conn.close()
            raise

    def _dispose_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        self._writer.dispose()

    @staticmethod
    def _autocommit(engine: Engine, fn: Callable[[Connection], T]) -> T:
        with engine.connect() as conn:
            return fn(conn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._write_thread.submit(self._write_and_report, loop, done, fn)
        return await done

    def _write_and_report(
        self,
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[T],
        fn: Callable[[Connection], T],
    ) -> None:
        # Runs in the writer thread and hands the outcome straight to the loop. This is
        # run_in_executor without its chaining of a concurrent Future to an asyncio one
        # (callbacks, locks, a state copy), which cost a measurable share of a small
        # batch's CPU: there is one such hop per transaction.
        try:
            result = self._in_transaction(fn)
        except BaseException as exc:
            loop.call_soon_threadsafe(fail_future, done, exc)
        else:
            loop.call_soon_threadsafe(resolve_future, done, result)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        call = functools.partial(self._autocommit, self._reader, fn)
        return await asyncio.get_running_loop().run_in_executor(self._read_threads, call)

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        # Close each pool's connections from its own threads, then stop the threads.
        await loop.run_in_executor(self._write_thread, self._dispose_writer)
        await loop.run_in_executor(self._read_threads, self._reader.dispose)
        self._write_thread.shutdown(wait=False)
        self._read_threads.shutdown(wait=False)


# ---------------------------------------------------------------------------
# PostgreSQL


class PostgresDatabase:
    """PostgreSQL through asyncpg and SQLAlchemy's asyncio engine."""

    backend: Backend = "postgresql"

    def __init__(self, target: Target, connect_timeout: float) -> None:
        self._target = target
        server_settings = {"application_name": "dubbing-gateway"}
        if target.schema:
            # Quoted: the value is parsed as a list of identifiers.
            server_settings["search_path"] = '"' + target.schema.replace('"', '""') + '"'
        connect_args: dict[str, Any] = {
            "timeout": connect_timeout,  # asyncpg's connect timeout
            "server_settings": server_settings,
        }
        # pool_pre_ping: a connection that died with a restarted server is replaced at
        # checkout instead of failing the next statement.
        self._writer: AsyncEngine = create_async_engine(
            target.url, pool_size=1, max_overflow=1, pool_pre_ping=True, connect_args=connect_args
        )
        self._reader: AsyncEngine = create_async_engine(
            target.url,
            pool_size=POSTGRES_READ_POOL,
            max_overflow=POSTGRES_READ_POOL,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            connect_args=connect_args,
        )

    def describe(self) -> str:
        return self._target.describe()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        async with self._writer.begin() as conn:
            return await conn.run_sync(fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        async with self._reader.connect() as conn:
            return await conn.run_sync(fn)

    async def dispose(self) -> None:
        await self._writer.dispose()
        await self._reader.dispose()
