"""Worker adverts as the gateway sees them, against a real nats-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from dubbing import bus, jetstream
from dubbing.devstack import NatsServer
from gateway.registry import WorkerRegistry


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    await jetstream.ensure_topology(conn.jetstream())
    yield conn
    await conn.close()


def advert(worker_id: str) -> bus.WorkerAdvert:
    langs = [bus.LanguageAdvert("fr", "French", ["female", "male"])]
    return bus.WorkerAdvert(worker_id, "local", True, False, langs, 0.5, 2.0, 1, time.time())


async def test_adverts_appear_and_withdrawals_disappear(nc: NATS) -> None:
    js = nc.jetstream()
    kv = await jetstream.workers_kv(js)
    registry = WorkerRegistry(nc, js, kv)
    await registry.refresh()
    assert registry.live() == []

    first, second = advert("w1"), advert("w2")
    await kv.put(first.key, first.encode())
    # Read right after the put, as SubmitDub does when it knows no worker yet.
    assert [a.worker_id for a in await registry.serving("local")] == ["w1"]

    await kv.put(second.key, second.encode())
    await kv.delete(first.key)  # a worker stopping gracefully withdraws its advert
    await registry.refresh()
    assert [a.worker_id for a in registry.live()] == ["w2"]
    assert await registry.serving("minimax") == []
