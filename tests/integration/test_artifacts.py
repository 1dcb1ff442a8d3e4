"""Result artifacts in the NATS Object Store, against a real nats-server."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from dubbing import artifacts, jetstream
from dubbing.devstack import NatsServer

CHUNK = 128 * 1024  # nats-py's object chunk size


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture
async def store(nc: NATS) -> ObjectStore:
    return await jetstream.results_store(nc.jetstream())


async def test_put_bytes_and_file_report_size_and_sha256(
    store: ObjectStore, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    path = tmp_path / "result.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    for name, source in (("from-bytes", data), ("from-file", path)):
        stored = await artifacts.put(store, name, source)
        assert (stored.name, stored.size, stored.sha256) == (name, len(data), expected)
        assert b"".join([c async for c in artifacts.stream(store, name)]) == data


async def test_a_slow_reader_holds_back_the_fetch(store: ObjectStore) -> None:
    data = os.urandom(40 * CHUNK)
    await artifacts.put(store, "big", data)
    reader = artifacts.ArtifactReader(store, "big", read_ahead=4)
    chunks = reader.chunks()
    received = bytearray(await anext(chunks))
    # The reader pauses: the fetch fills the read-ahead and then has to wait.
    # (Unbounded, it would never wait and this would time out.)
    await asyncio.wait_for(reader.wait_stalled(), timeout=30)
    assert reader.fetched == 1 + 4  # the chunk taken and the 4 queued; one more waits
    async for chunk in chunks:
        received += chunk
    assert bytes(received) == data
    assert reader.fetched == 40


async def test_a_reader_that_stops_early_ends_the_fetch(store: ObjectStore) -> None:
    data = os.urandom(30 * CHUNK)
    await artifacts.put(store, "abandoned", data)
    reader = artifacts.ArtifactReader(store, "abandoned", read_ahead=2)
    chunks = reader.chunks()
    first = await anext(chunks)
    assert first == data[:CHUNK]
    await chunks.aclose()  # returns only once the fetch has ended
    stopped_at = reader.fetched
    assert stopped_at < 30
    # The store is still usable, and the object whole.
    assert b"".join([c async for c in artifacts.stream(store, "abandoned")]) == data


async def test_missing_object_fails_before_anything_is_yielded(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        await anext(artifacts.stream(store, "nothing-here"))
