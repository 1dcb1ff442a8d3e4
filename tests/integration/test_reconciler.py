"""Leases and the reconciler against real processes: nothing accepted is lost.

Each test owns a stack (nats-server, gateway, worker processes) and breaks it
with signals only. A job's background URL points at a gated HTTP server of the
test's own: every attempt that reaches its background fetch shows up as one
request, held until the test releases it, so a test knows exactly which
attempt is running where and decides when (and how) each one may go on.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import create_async_engine

from dubbing import bus, devstack
from dubbing.client import DubbingClient
from dubbing.devstack import GATEWAY_READY, NATS_READY, ManagedProcess, Stack, free_port
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.helpers import segment, transcript_request
from tests.integration.test_background_mix import tone_wav

State = pb.Job.State
# How long a test waits for one step (an attempt to arrive, a job to end).
STEP_SECONDS = 60.0


@dataclass
class _Arrival:
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    status: int = 200


class GatedBackground:
    """An HTTP server whose n-th request (1, 2, ...) waits until the test releases it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[int, _Arrival] = {}
        self._count = 0
        self._body = tone_wav(3.0)
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with gate._lock:
                    gate._count += 1
                    arrival = gate._slot(gate._count)
                arrival.arrived.set()
                arrival.released.wait(STEP_SECONDS)
                body = gate._body if arrival.status == 200 else b"busy"
                try:
                    self.send_response(arrival.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the worker died while held

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bed.wav"

    def _slot(self, n: int) -> _Arrival:
        return self._arrivals.setdefault(n, _Arrival())

    def wait_arrival(self, n: int) -> None:
        """Block until the n-th request came in (call through asyncio.to_thread)."""
        with self._lock:
            arrival = self._slot(n)
        if not arrival.arrived.wait(STEP_SECONDS):
            raise TimeoutError(f"request {n} did not arrive")

    def release(self, n: int, status: int = 200) -> None:
        with self._lock:
            arrival = self._slot(n)
        arrival.status = status
        arrival.released.set()

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        for arrival in self._arrivals.values():
            arrival.released.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def gated() -> Iterator[GatedBackground]:
    server = GatedBackground()
    yield server
    server.close()


def gated_request(url: str) -> pb.DubRequest:
    request = transcript_request([segment(0.5, 2.5, "Bonjour et bienvenue.")])
    request.request_id = str(uuid.uuid4())
    request.transcript.background.url = url
    return request


async def submit_gated(stub: pb_grpc.DubbingServiceAsyncStub, gated: GatedBackground) -> pb.Job:
    response = await stub.SubmitDub(pb.SubmitDubRequest(request=gated_request(gated.url)))
    return response.job


async def kill_first_attempt(
    stack: Stack, stub: pb_grpc.DubbingServiceAsyncStub, gated: GatedBackground, job_id: str
) -> None:
    """SIGKILL attempt 1's worker while it is held, and wait until attempt 2 is held."""
    await to_thread_wait(gated, 1)
    worker_of(stack, await running_attempt(stub, job_id, 1)).kill()
    await to_thread_wait(gated, 2)


def worker_of(stack: Stack, job: pb.Job) -> ManagedProcess:
    """The worker process whose id (hostname-pid) the job names."""
    pid = int(job.worker_id.rsplit("-", 1)[1])
    return next(w for w in stack.workers if w.running and w.pid == pid)


async def running_attempt(
    stub: pb_grpc.DubbingServiceAsyncStub, job_id: str, attempt: int
) -> pb.Job:
    """The job once `attempt` is RUNNING (its STARTED applied)."""
    async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
        job = response.job
        if job.attempt == attempt and job.state == State.STATE_RUNNING:
            return job
        if job.attempt > attempt or job.state in (
            State.STATE_SUCCEEDED,
            State.STATE_FAILED,
            State.STATE_CANCELLED,
        ):
            break
    raise AssertionError(f"attempt {attempt} of {job_id} never ran")


async def final(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> pb.Job:
    versions = [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]
    return versions[-1]


async def history(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> list[pb.Job]:
    return [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=0))]


async def stream_state(stack: Stack, stream: str) -> tuple[int, int]:
    """(messages held, last sequence) of a stream."""
    nc = await nats.connect(stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages), int(info.state.last_seq)
    finally:
        await nc.close()


async def to_thread_wait(gated: GatedBackground, n: int) -> None:
    await asyncio.to_thread(gated.wait_arrival, n)


async def wait_line(process: ManagedProcess, needle: str) -> str:
    return await asyncio.to_thread(process.wait_for, needle, STEP_SECONDS)


async def wait_lines(process: ManagedProcess, needles: tuple[str, ...], times: int) -> None:
    """Until `times` output lines contain every one of `needles`."""

    def matches(line: str) -> bool:
        return all(n in line for n in needles)

    def enough(line: str) -> bool:
        return matches(line) and sum(matches(seen) for seen in process.lines) >= times

    await asyncio.to_thread(process.wait_for, enough, STEP_SECONDS)


# ---------------------------------------------------------------------------
# 1. A stalled attempt wakes up after its job went to another attempt.


@pytest.mark.parametrize("then", ["killed", "transient", "handed_back"])
async def test_stalled_attempt_that_wakes_cannot_lose_the_job(
    make_stack: StackFactory, gated: GatedBackground, then: str
) -> None:
    """Attempt 1 freezes past its lease, attempt 2 starts elsewhere, attempt 1 wakes
    (and, in the design this replaced, acked the message attempt 2 was working on);
    then attempt 2 dies, fails transiently, or is handed back at SIGTERM. The job
    must still succeed, exactly once, on attempt 3."""
    stack = make_stack(workers=3, DUBBING_RETRY_BASE_SECONDS="0.2").start()
    async with (
        grpc.aio.insecure_channel(stack.listen) as channel,
        DubbingClient(stack.listen) as client,
    ):
        stub = pb_grpc.DubbingServiceStub(channel)
        job = await submit_gated(stub, gated)

        await to_thread_wait(gated, 1)
        first = worker_of(stack, await running_attempt(stub, job.id, 1))
        first.signal(signal.SIGSTOP)  # no renewals, no events: its lease runs out

        await to_thread_wait(gated, 2)
        second_job = await running_attempt(stub, job.id, 2)
        second = worker_of(stack, second_job)
        assert second is not first

        first.signal(signal.SIGCONT)
        gated.release(1)  # attempt 1 may now finish, and would ack if it could
        line = await wait_line(first, "job_finished")
        assert "superseded" in line or "succeeded" in line, line

        if then == "killed":
            second.kill()
        elif then == "transient":
            gated.release(2, status=503)
        else:
            second.stop()  # SIGTERM: grace passes with the fetch still held
            assert second.count("handed_back") == 1

        await to_thread_wait(gated, 3)
        gated.release(3)
        done = await final(stub, job.id)
        assert done.state == State.STATE_SUCCEEDED, done.error
        assert done.attempt == 3
        versions = await history(stub, job.id)
        assert sum(v.state == State.STATE_SUCCEEDED for v in versions) == 1
        # The result is the one attempt 3 stored, and it downloads intact.
        assert done.result.artifact.startswith(f"{job.id}/attempt-3-")
        path = stack.data_dir / "result.wav"
        await client.download(job.id, path)  # checks size and SHA-256
        assert path.stat().st_size == done.result.size_bytes
    assert await stream_state(stack, bus.JOBS_STREAM) == (0, 3)  # one message per attempt


# ---------------------------------------------------------------------------
# 2. Deliveries run out while no gateway is there to see it.


async def test_exhausted_attempts_while_the_gateway_is_down_fail_the_job(
    make_stack: StackFactory, gated: GatedBackground
) -> None:
    stack = make_stack(workers=2, DUBBING_MAX_DELIVER="2").start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = await submit_gated(stub, gated)
        await kill_first_attempt(stack, stub, gated, job.id)
        last = worker_of(stack, await running_attempt(stub, job.id, 2))

    stack.gateway.stop()
    last.kill()  # the last attempt dies with no gateway up
    stack.gateway.start().wait_for(GATEWAY_READY)

    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        done = await final(stub, job.id)
    assert done.state == State.STATE_FAILED
    assert done.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "MAX_DELIVERIES_EXCEEDED" in str(done.error.details[0].value)
    assert not done.HasField("usage")
    assert await stream_state(stack, bus.JOBS_STREAM) == (0, 2)
    assert gated.count == 2  # nothing ran a third time


# ---------------------------------------------------------------------------
# 3. A live attempt is never taken back, however long it runs.


async def test_a_long_attempt_keeps_its_job_through_a_gateway_restart(
    make_stack: StackFactory, gated: GatedBackground
) -> None:
    stack = make_stack(workers=2).start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = await submit_gated(stub, gated)
        await to_thread_wait(gated, 1)
        await running_attempt(stub, job.id, 1)
    stack.gateway.stop()
    stack.gateway.start().wait_for(GATEWAY_READY)
    # The restarted gateway checks the held attempt's lease round after round (a
    # round every third of the 3 s lease, checking once connected for a lease):
    # twelve rounds span four leases, and its renewals keep it every time.
    await wait_lines(stack.gateway, ('"reconcile_round"', '"leases_checked": true'), 12)
    gated.release(1)
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        done = await final(stub, job.id)
    assert done.state == State.STATE_SUCCEEDED and done.attempt == 1
    assert gated.count == 1
    assert stack.gateway.count("job_lease_expired") == 0


# ---------------------------------------------------------------------------
# 4. nats-server killed with jobs in flight.


async def test_nats_killed_with_jobs_in_flight_loses_nothing_and_keeps_results_intact(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = make_stack(workers=2).start()
    async with DubbingClient(stack.listen) as client:
        jobs = [await client.submit(transcript_request(request_id=f"crash-{i}")) for i in range(24)]
        # Kill it while the first jobs run and the rest wait in the queue.
        async for current in client.watch(jobs[2].id):
            if current.state in (State.STATE_RUNNING, State.STATE_SUCCEEDED):
                break
        stack.nats.kill()
        stack.nats.start().wait_for(NATS_READY)

        for job in jobs:
            done = [j async for j in client.watch(job.id)][-1]
            assert done.state == State.STATE_SUCCEEDED, (job.id, done.error)
            out = tmp_path / f"{job.id}.wav"
            await client.download(job.id, out)  # raises IntegrityError on a mismatch
            assert out.stat().st_size == done.result.size_bytes


# ---------------------------------------------------------------------------
# 5. Two gateways reconcile the same database at once.

DSN = os.environ.get("DUBBING_TEST_POSTGRES_DSN", "")


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    if not DSN:
        pytest.skip("set DUBBING_TEST_POSTGRES_DSN to run two gateways on PostgreSQL")
    name = f"reconcile_{uuid.uuid4().hex[:12]}"
    yield name
    engine = create_async_engine(DSN)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await engine.dispose()


async def test_two_gateways_reclaim_a_dead_attempt_once(
    make_stack: StackFactory, gated: GatedBackground, pg_schema: str
) -> None:
    stack = make_stack(workers=2, DUBBING_DATABASE_URL=f"{DSN}?schema={pg_schema}").start()
    other = devstack.gateway(
        {**stack.env, "DUBBING_LISTEN": f"127.0.0.1:{free_port()}"},
        log_file=stack.data_dir / "gateway-2.log",
    )
    try:
        other.start().wait_for(GATEWAY_READY)
        async with grpc.aio.insecure_channel(stack.listen) as channel:
            stub = pb_grpc.DubbingServiceStub(channel)
            job = await submit_gated(stub, gated)
            await kill_first_attempt(stack, stub, gated, job.id)
            gated.release(2)
            done = await final(stub, job.id)
        assert done.state == State.STATE_SUCCEEDED and done.attempt == 2
        reclaims = stack.gateway.count("job_lease_expired") + other.count("job_lease_expired")
        assert reclaims == 1
    finally:
        other.stop()
    engine = create_async_engine(DSN, connect_args={"server_settings": {"search_path": pg_schema}})
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT attempt FROM outbox WHERE job_id = :id ORDER BY attempt"),
                {"id": job.id},
            )
            assert [r.attempt for r in rows] == [1, 2]
    finally:
        await engine.dispose()
    assert await stream_state(stack, bus.JOBS_STREAM) == (0, 2)
    assert gated.count == 2


# ---------------------------------------------------------------------------
# 6. A QUEUED job's message vanishes from the work queue.


async def stored_once(js: JetStreamContext) -> None:
    """Until the work queue has stored its first message (the relay published the job)."""
    deadline = time.monotonic() + STEP_SECONDS
    while time.monotonic() < deadline:
        if (await js.stream_info(bus.JOBS_STREAM)).state.last_seq >= 1:
            return
        await asyncio.sleep(0.05)  # polling a server-side counter, not waiting on a guess
    raise TimeoutError("the job was never published")


async def test_a_queued_job_whose_message_the_bus_lost_is_dispatched_again(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(workers=1).start()
    # No worker pulls while the message is removed; its advert still admits the job.
    stack.workers[0].kill()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = (await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request()))).job
        nc = await nats.connect(stack.nats.url)
        try:
            js = nc.jetstream()
            # As a crash that lost the stream's tail would: the message is gone.
            await stored_once(js)
            await js.purge_stream(bus.JOBS_STREAM)
        finally:
            await nc.close()
        fresh = devstack.worker(stack.env, name="worker-2", log_file=stack.data_dir / "w2.log")
        stack.workers.append(fresh)
        fresh.start().wait_for(devstack.WORKER_READY)
        done = await final(stub, job.id)
    assert done.state == State.STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert stack.gateway.count("job_message_lost") == 1
    assert await stream_state(stack, bus.JOBS_STREAM) == (0, 2)
