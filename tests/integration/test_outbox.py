"""The outbox relay against a real nats-server and a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from dubbing import bus, jetstream, jobstate
from dubbing.devstack import NatsServer
from dubbing.v1 import dubbing_pb2 as pb
from gateway.outbox import OutboxRelay
from gateway.store import JobStore, new_job_id, open_store
from tests.helpers import segment, transcript_request

State = pb.Job.State


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = await open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    await s.close()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await jetstream.connect(nats_server.url, name="test", connect_timeout=5)
    context = nc.jetstream()
    await jetstream.ensure_topology(context)
    yield context
    await jetstream.close(nc)


async def submit(store: JobStore, request: pb.DubRequest) -> pb.Job:
    request.provider = "local"
    job = jobstate.new_job(new_job_id(), request, time.time())
    message = jobstate.job_message(job, 1, store.policy)
    stored, _ = await store.submit(job, request_hash=job.id, message=message)
    return stored


async def test_a_refused_message_fails_its_job_and_never_holds_up_the_rows_behind_it(
    store: JobStore, js: JetStreamContext
) -> None:
    # The work queue takes messages of at most 1 KiB: the first job's is larger.
    info = await js.stream_info(bus.JOBS_STREAM)
    info.config.max_msg_size = 1024
    await js.update_stream(info.config)
    big = await submit(store, transcript_request([segment(0.0, 2.0, "Bonjour " * 200)]))
    small = await submit(store, transcript_request())

    relay = OutboxRelay(
        store,
        js,
        requests=await jetstream.requests_store(js),
        max_payload=1024 * 1024,
        refused_for_seconds=1.0,
    )
    task = asyncio.create_task(relay.run())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = await store.get(big.id)
            assert job is not None
            if job.state == State.STATE_FAILED:
                break
            await asyncio.sleep(0.05)  # polling the database the relay writes to
        else:
            raise AssertionError("the refused job never failed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert "JOB_UNDELIVERABLE" in str(job.error.details[0].value)
    assert not job.HasField("usage")
    # The small job behind it went out at once, and nothing is left to publish.
    assert (await js.stream_info(bus.JOBS_STREAM)).state.messages == 1
    msg = await js.get_msg(
        bus.JOBS_STREAM, seq=(await js.stream_info(bus.JOBS_STREAM)).state.last_seq
    )
    assert (msg.headers or {})[bus.HEADER_JOB_ID] == small.id
    assert await store.pending_outbox(10) == []
