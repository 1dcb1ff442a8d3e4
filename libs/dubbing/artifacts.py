"""Result audio in the NATS Object Store: the worker puts, the gateway streams out."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from nats.js.object_store import ObjectStore


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


class _QueueWriter(io.RawIOBase):
    """A file-like sink that hands each chunk to the event loop.

    nats-py writes an object's chunks into a file-like object from an executor
    thread; forwarding them to a queue lets the gateway stream a result to its
    client chunk by chunk instead of loading the whole file first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        super().__init__()
        self._loop = loop
        self._queue = queue

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        data = bytes(b)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, data)
        return len(data)


async def stream(store: ObjectStore, name: str) -> AsyncIterator[bytes]:
    """Yield the object's chunks in order; the object's digest is verified at the end.

    Raises ``nats.js.errors.ObjectNotFoundError`` when there is no such object.
    """
    await store.get_info(name)  # fail fast, before anything is yielded
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    writer = _QueueWriter(loop, queue)

    async def pump() -> None:
        try:
            await store.get(name, writeinto=writer)  # type: ignore[arg-type]
        finally:
            # Runs after the executor writes were scheduled, so the end marker
            # is queued behind the last chunk.
            loop.call_soon(queue.put_nowait, None)

    task = asyncio.create_task(pump())
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        await task  # re-raises a digest mismatch or read error
    finally:
        if not task.done():
            task.cancel()
