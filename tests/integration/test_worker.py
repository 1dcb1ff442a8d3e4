"""The worker's delivery contract: retries, failures, hand-back on shutdown.

A real nats-server and gateway process per test; the worker runs in the test's
event loop with a scripted provider, so failures happen exactly where a test
wants them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import numpy as np
import pytest

from dubbing import bus
from dubbing.devstack import GATEWAY_READY, NATS_READY, ManagedProcess, NatsServer, free_port
from dubbing.devstack import gateway as gateway_process
from dubbing.errors import Reason
from dubbing.settings import WorkerSettings
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.helpers import segment, transcript_request
from worker.providers import (
    Capabilities,
    Gender,
    Language,
    ProviderAccountError,
    ProviderError,
    Speech,
    SynthesisRequest,
    TransientProviderError,
    UnsupportedError,
)
from worker.runner import Worker

State = pb.Job.State


@dataclass
class ScriptedProvider:
    """Speaks a tone; raises the queued errors first; can be held mid-job."""

    errors: list[ProviderError] = field(default_factory=list)
    hold: asyncio.Event | None = None
    calls: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def capabilities(self) -> Capabilities:
        both = (Gender.FEMALE, Gender.MALE)
        return Capabilities(
            provider="local",
            languages=(Language("fr", "French", both),),
            min_speed=0.5,
            max_speed=2.0,
            max_chars_per_request=1000,
        )

    async def synthesize(self, request: SynthesisRequest) -> Speech:
        self.calls += 1
        self.entered.set()
        if self.errors:
            raise self.errors.pop(0)
        if self.hold is not None:
            await self.hold.wait()
        t = np.arange(int(0.5 * 22050)) / 22050
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        return Speech(tone, 22050, characters=len(request.text))

    async def aclose(self) -> None:
        pass


@dataclass
class Env:
    nats_url: str
    stub: pb_grpc.DubbingServiceAsyncStub


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[NatsServer, ManagedProcess]]:
    server = NatsServer(tmp_path / "nats")
    server.start().wait_for(NATS_READY)
    gw = gateway_process(
        {
            "DUBBING_NATS_URL": server.url,
            "DUBBING_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
            "DUBBING_LISTEN": f"127.0.0.1:{free_port()}",
            "DUBBING_WATCH_POLL_SECONDS": "1",
            # The gateway owns the attempt limit; each message tells the worker.
            "DUBBING_MAX_DELIVER": "3",
            "DUBBING_ACK_WAIT_SECONDS": "3",
        }
    )
    gw.start().wait_for(GATEWAY_READY)
    yield server, gw
    gw.stop()
    server.stop()


@pytest.fixture
async def env(services: tuple[NatsServer, ManagedProcess]) -> AsyncIterator[Env]:
    server, gw = services
    async with grpc.aio.insecure_channel(gw.env["DUBBING_LISTEN"]) as channel:
        yield Env(server.url, pb_grpc.DubbingServiceStub(channel))


def settings(nats_url: str, **overrides: object) -> WorkerSettings:
    base: dict[str, object] = {
        "nats_url": nats_url,
        "worker_id": "test-worker",
        "concurrency": 1,
        "ack_wait_seconds": 3.0,
        # Not the limit these tests see: the gateway's (3) travels with each message.
        "max_deliver": 99,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "grace_seconds": 0.2,
    }
    return WorkerSettings(**{**base, **overrides})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Event]:
    """Run `worker` (ready and advertised) until the block ends or sets the stop event."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task  # raises why the worker could not start
    try:
        yield stop
    finally:
        stop.set()
        await task


async def finish(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> list[pb.Job]:
    return [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]


async def submit(stub: pb_grpc.DubbingServiceAsyncStub) -> pb.Job:
    # One segment: the timing engine synthesizes segments concurrently, and these
    # tests count provider calls per delivery.
    request = transcript_request([segment(0.0, 2.0, "Bonjour.")])
    response: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    return response.job


async def queue_is_empty(nats_url: str) -> bool:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(bus.JOBS_STREAM)
        return bool(info.state.messages == 0)
    finally:
        await nc.close()


async def test_transient_failures_are_retried_then_succeed(env: Env) -> None:
    provider = ScriptedProvider(
        errors=[
            TransientProviderError("busy", reason=Reason.PROVIDER_ERROR, provider="local"),
            TransientProviderError("busy", reason=Reason.PROVIDER_ERROR, provider="local"),
        ]
    )
    async with running(Worker(settings(env.nats_url), {"local": provider})):
        job = await submit(env.stub)
        history = await finish(env.stub, job.id)
    final = history[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error
    assert final.attempt == 3
    assert [j.attempt for j in history if j.stage == "retrying"] == [1, 2]
    assert await queue_is_empty(env.nats_url)


async def test_transient_failures_stop_at_max_deliver(env: Env) -> None:
    provider = ScriptedProvider(
        errors=[TransientProviderError("busy", reason=Reason.PROVIDER_ERROR, provider="local")] * 5
    )
    async with running(Worker(settings(env.nats_url), {"local": provider})):
        job = await submit(env.stub)
        final = (await finish(env.stub, job.id))[-1]
    assert final.state == State.STATE_FAILED
    assert final.attempt == 3 and provider.calls == 3
    assert final.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "PROVIDER_ERROR" in str(final.error.details[0].value)
    assert "3 attempts" in final.error.message
    assert not final.HasField("usage")  # a failed job is never billed
    assert await queue_is_empty(env.nats_url)


async def test_permanent_failure_fails_at_once_with_the_reason(env: Env) -> None:
    provider = ScriptedProvider(
        errors=[UnsupportedError("no such voice", reason=Reason.VOICE_NOT_FOUND, provider="local")]
    )
    async with running(Worker(settings(env.nats_url), {"local": provider})):
        job = await submit(env.stub)
        final = (await finish(env.stub, job.id))[-1]
    assert final.state == State.STATE_FAILED and final.attempt == 1
    assert provider.calls == 1
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "VOICE_NOT_FOUND" in str(final.error.details[0].value)
    assert await queue_is_empty(env.nats_url)  # terminated, not left for redelivery


async def test_our_account_s_fault_is_failed_precondition_not_the_callers(env: Env) -> None:
    provider = ScriptedProvider(
        errors=[
            ProviderAccountError(
                "invalid api key", reason=Reason.PROVIDER_AUTH_FAILED, provider="local"
            )
        ]
    )
    async with running(Worker(settings(env.nats_url), {"local": provider})):
        job = await submit(env.stub)
        final = (await finish(env.stub, job.id))[-1]
    assert final.state == State.STATE_FAILED and final.attempt == 1
    assert final.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "PROVIDER_AUTH_FAILED" in str(final.error.details[0].value)
    assert not final.HasField("usage")


async def test_shutdown_hands_back_unfinished_work(env: Env) -> None:
    held = ScriptedProvider(hold=asyncio.Event())  # never finishes by itself
    first = Worker(settings(env.nats_url, worker_id="first"), {"local": held})
    async with running(first) as stop_first:
        job = await submit(env.stub)
        await held.entered.wait()
        stop_first.set()  # grace 0.2 s passes with the job still held
    # Handed back: the job waits for the next worker instead of failing.
    async for response in env.stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
        if response.job.stage == "retrying":
            assert response.job.state == State.STATE_QUEUED
            break
    else:
        raise AssertionError("the job was not handed back")

    second = Worker(settings(env.nats_url, worker_id="second"), {"local": ScriptedProvider()})
    async with running(second):
        final = (await finish(env.stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED
    assert final.attempt == 2 and final.worker_id == "second"


async def test_shutdown_lets_in_flight_work_finish_within_grace(env: Env) -> None:
    gate = asyncio.Event()
    provider = ScriptedProvider(hold=gate)
    worker = Worker(settings(env.nats_url, grace_seconds=30.0), {"local": provider})
    async with running(worker) as stop:
        job = await submit(env.stub)
        await provider.entered.wait()
        stop.set()  # stop fetching; the job in hand may finish
        gate.set()
    final = (await finish(env.stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED and final.attempt == 1
