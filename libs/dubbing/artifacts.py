"""Result audio in the NATS Object Store: the worker puts, the gateway streams out."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from nats.js.object_store import ObjectStore


class IncompleteObject(Exception):
    """An object store read that ended before the object did.

    nats-py's ``ObjectStore.get`` (2.16) reads chunks through an ordered consumer
    and, should that consumer's subscription end before the last chunk, returns
    what it has without an error: its digest check runs only on the last chunk.
    Not seen here; checked because a short request or result must never pass
    for a whole one. Worth retrying.
    """

    def __init__(self, name: str, got: int, size: int) -> None:
        super().__init__(f"read {got:,} of the {size:,} bytes of {name!r}")
        self.name = name


async def read(store: ObjectStore, name: str) -> bytes:
    """The whole object (for small ones: it is held in memory), checked to be complete.

    Raises ``nats.js.errors.ObjectNotFoundError`` when there is no such object and
    :class:`IncompleteObject` when the read ended short.
    """
    result = await store.get(name)
    data = bytes(result.data or b"")
    size = int(result.info.size or 0)
    if len(data) != size:
        raise IncompleteObject(name, len(data), size)
    return data


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    name: str
    size: int
    sha256: str


async def put(store: ObjectStore, name: str, data: bytes | Path) -> StoredArtifact:
    """Store `data`, or the file at that path, read chunk by chunk (never whole)."""
    if isinstance(data, bytes):
        info = await store.put(name, io.BytesIO(data))
    else:
        with data.open("rb") as f:
            info = await store.put(name, f)
    # nats-py hashes the chunks as it sends them: "SHA-256=<base64url digest>".
    digest = base64.urlsafe_b64decode(str(info.digest).partition("=")[2])
    return StoredArtifact(name=name, size=int(info.size or 0), sha256=digest.hex())


# Chunks (128 KiB each, nats-py's default) read ahead of a slow consumer.
READ_AHEAD_CHUNKS = 8


class _QueueWriter(io.RawIOBase):
    """A file-like sink that hands each chunk to the event loop, waiting for room.

    nats-py writes an object's chunks into a file-like object from an executor
    thread. Each write blocks that thread until the bounded queue has room, so a
    client that reads slowly holds back the object store instead of making the
    gateway buffer the whole result (a three-hour WAV is over 500 MB).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        super().__init__()
        self._loop = loop
        self._queue = queue
        self._pending: concurrent.futures.Future[None] | None = None
        self._aborted = threading.Event()
        self.written = 0  # chunks handed over
        # Set (on the loop) the first time a chunk has to wait for room.
        self.stalled = asyncio.Event()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        if self._aborted.is_set():
            raise ConnectionAbortedError("the reader went away")
        data = bytes(b)
        self._pending = asyncio.run_coroutine_threadsafe(self._put(data), self._loop)
        try:
            self._pending.result()
        except concurrent.futures.CancelledError as exc:
            raise ConnectionAbortedError("the reader went away") from exc
        self.written += 1
        return len(data)

    async def _put(self, data: bytes) -> None:
        if self._queue.full():
            self.stalled.set()
        await self._queue.put(data)

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def abort(self) -> None:
        """Called on the loop when the reader stops: unblock and fail the writer."""
        self._aborted.set()
        if self._pending is not None:
            self._pending.cancel()


class ArtifactReader:
    """Reads one object chunk by chunk, at most `read_ahead` chunks ahead of the consumer."""

    def __init__(self, store: ObjectStore, name: str, *, read_ahead: int = READ_AHEAD_CHUNKS):
        if read_ahead < 1:
            raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
        self._store = store
        self._name = name
        self._read_ahead = read_ahead
        self._writer: _QueueWriter | None = None

    @property
    def fetched(self) -> int:
        """Chunks fetched from the store so far (consumed or waiting)."""
        return self._writer.written if self._writer else 0

    async def wait_stalled(self) -> None:
        """Return once the fetch has had to wait for the consumer (for tests)."""
        if self._writer is None:
            raise RuntimeError("the reader has not started")
        await self._writer.stalled.wait()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the object's chunks in order; its digest is verified at the end.

        Raises ``nats.js.errors.ObjectNotFoundError`` when there is no such object.
        """
        info = await self._store.get_info(self._name)  # fail fast, before anything is yielded
        size = int(info.size or 0)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=self._read_ahead)
        writer = self._writer = _QueueWriter(asyncio.get_running_loop(), queue)

        async def pump() -> None:
            try:
                await self._store.get(self._name, writeinto=writer)  # type: ignore[arg-type]
            finally:
                # After the last chunk was queued (each write waited for its put).
                if not writer.aborted:
                    await queue.put(None)

        task = asyncio.create_task(pump())
        got = 0
        try:
            while (chunk := await queue.get()) is not None:
                got += len(chunk)
                yield chunk
            await task  # re-raises a digest mismatch or read error
            if got != size:
                raise IncompleteObject(self._name, got, size)
        finally:
            if not task.done():
                writer.abort()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def stream(store: ObjectStore, name: str) -> AsyncGenerator[bytes, None]:
    """The object's chunks in order, read a few ahead; see ArtifactReader."""
    return ArtifactReader(store, name).chunks()
