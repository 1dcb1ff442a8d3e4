"""Faults against real processes: each test owns its stack so it can break it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import nats
import pytest
from nats.js.api import ConsumerInfo

from dubbing import bus, devstack
from dubbing.client import DubbingClient
from dubbing.devstack import ManagedProcess, Stack
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.helpers import long_request, rich_error, transcript_request

State = pb.Job.State


def worker_running(stack: Stack, job: pb.Job) -> ManagedProcess:
    """The worker process whose id (hostname-pid) the job names."""
    pid = int(job.worker_id.rsplit("-", 1)[1])
    return next(w for w in stack.workers if w.pid == pid)


async def gateway_consumer(stack: Stack) -> ConsumerInfo:
    nc = await nats.connect(stack.nats.url)
    try:
        info: ConsumerInfo = await nc.jetstream().consumer_info(
            bus.EVENTS_STREAM, bus.GATEWAY_EVENTS_CONSUMER
        )
        return info
    finally:
        await nc.close()


async def events_settled(stack: Stack) -> None:
    """Until the gateway has applied (acked) every event in the stream."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = await gateway_consumer(stack)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.1)  # polling a server-side counter, not waiting on a guess
    raise TimeoutError("gateway did not apply the remaining events")


async def history(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> list[pb.Job]:
    """Every version of the job after its first (sequence 1)."""
    return [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=1))]


async def test_killed_worker_job_completes_once_on_second_attempt(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(workers=2).start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = (await stub.SubmitDub(pb.SubmitDubRequest(request=long_request(150)))).job
        victim: ManagedProcess | None = None
        forged = False
        async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
            current = response.job
            if victim is None and current.state == State.STATE_RUNNING:
                assert current.attempt == 1
                victim = worker_running(stack, current)
                victim.kill()
            if not forged and current.attempt == 2 and current.state == State.STATE_RUNNING:
                # A late report from the dead attempt (as if its ack and events
                # were still in flight) must not touch the job.
                nc = await nats.connect(stack.nats.url)
                late = bus.JobEvent(
                    job_id=job.id,
                    attempt=1,
                    seq=10_000,
                    type=bus.EventType.SUCCEEDED,
                    worker_id="zombie",
                    time=time.time(),
                    result=bus.ResultInfo("bogus", "wav", 24000, 1.0, 1, "00"),
                )
                await nc.jetstream().publish(late.subject, late.encode())
                await nc.close()
                forged = True
        assert victim is not None and forged
        await events_settled(stack)
        final = (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).job
        assert final.state == State.STATE_SUCCEEDED, final.error
        assert final.attempt == 2
        assert final.result.artifact.startswith(f"{job.id}/attempt-2-")
        versions = await history(stub, job.id)
        assert sum(v.state == State.STATE_SUCCEEDED for v in versions) == 1
        assert all(v.worker_id != "zombie" for v in versions)


async def test_stalled_worker_wakes_up_and_is_fenced(make_stack: StackFactory) -> None:
    stack = make_stack(workers=2).start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = (await stub.SubmitDub(pb.SubmitDubRequest(request=long_request(150)))).job
        stalled: ManagedProcess | None = None
        async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
            if stalled is None and response.job.state == State.STATE_RUNNING:
                stalled = worker_running(stack, response.job)
                stalled.signal(signal.SIGSTOP)  # stops heartbeating: redelivered after ack_wait
        assert stalled is not None
        final = (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).job
        assert final.state == State.STATE_SUCCEEDED and final.attempt == 2

        # Wake the stalled attempt; it finishes and reports, too late.
        stalled.signal(signal.SIGCONT)
        await asyncio.to_thread(stalled.wait_for, "job_finished", 60)
        await events_settled(stack)
        after = (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).job
        assert after == final, "a superseded attempt changed the job"
        versions = await history(stub, job.id)
        assert sum(v.state == State.STATE_SUCCEEDED for v in versions) == 1
        assert all(v.attempt == 2 for v in versions if v.state == State.STATE_SUCCEEDED)


async def test_jobs_accepted_while_nats_is_down_are_delivered(make_stack: StackFactory) -> None:
    stack = make_stack().start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        # One job end to end first: the gateway has then seen the worker's advert.
        warm = (await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request()))).job
        states = [r.job.state async for r in stub.WatchJob(pb.WatchJobRequest(job_id=warm.id))]
        assert states[-1] == State.STATE_SUCCEEDED
        stack.nats.stop()
        accepted = []
        for i in range(5):
            request = transcript_request(request_id=f"outage-{i}")
            accepted.append((await stub.SubmitDub(pb.SubmitDubRequest(request=request))).job)
        assert all(j.state == State.STATE_QUEUED for j in accepted)

        stack.nats.start().wait_for("Server is ready")
        for job in accepted:
            final = [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id))][-1]
            assert final.state == State.STATE_SUCCEEDED, final.error
            assert final.attempt == 1


async def test_watch_resumes_across_gateway_restart(make_stack: StackFactory) -> None:
    stack = make_stack().start()
    async with DubbingClient(stack.listen) as client:
        job = await client.submit(long_request(120))
        seen: list[pb.Job] = []
        restarted = False
        async for current in client.watch(job.id):
            seen.append(current)
            if not restarted and current.state == State.STATE_RUNNING:
                stack.gateway.stop()
                stack.gateway.start().wait_for("gateway_ready")
                restarted = True
        assert restarted
        sequences = [j.sequence for j in seen]
        first = sequences[0]  # the current snapshot: the job may already have started
        assert sequences == list(range(first, first + len(seen))), "missed or repeated a change"
        assert seen[-1].state == State.STATE_SUCCEEDED
        assert await client.get(job.id) == seen[-1]


async def test_job_whose_workers_keep_dying_fails_at_max_deliver(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(workers=2, DUBBING_MAX_DELIVER="2").start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = (await stub.SubmitDub(pb.SubmitDubRequest(request=long_request(150)))).job
        stalled: set[int] = set()
        final = job
        async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
            final = response.job
            if final.state == State.STATE_RUNNING and final.attempt not in stalled:
                # Each attempt's worker freezes: no heartbeat, no report, no ack.
                worker_running(stack, final).signal(signal.SIGSTOP)
                stalled.add(final.attempt)
                if len(stalled) == 2:
                    # As Kubernetes would, a fresh worker comes up and pulls: the
                    # server then finds the job out of deliveries and says so.
                    fresh = devstack.worker(stack.env, name="worker-3")
                    stack.workers.append(fresh)
                    fresh.start()
        assert stalled == {1, 2}
        assert final.state == State.STATE_FAILED
        assert final.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "MAX_DELIVERIES_EXCEEDED" in str(final.error.details[0].value)
        assert await work_queue_is_empty(stack)


async def work_queue_is_empty(stack: Stack) -> bool:
    nc = await nats.connect(stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(bus.JOBS_STREAM)
        return bool(info.state.messages == 0)
    finally:
        await nc.close()


async def test_download_while_nats_is_away_is_unavailable_not_gone(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = make_stack().start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        job = (await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request()))).job
        done = [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id))][-1]
        assert done.state == State.STATE_SUCCEEDED

        stack.nats.stop()
        call = stub.DownloadResult(pb.DownloadResultRequest(job_id=job.id))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        error = await rich_error(caught.value)
        # Retryable, as it is: not NOT_FOUND "no longer stored", which clients give up on.
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "BUS_UNAVAILABLE")

        stack.nats.start().wait_for("Server is ready")
    async with DubbingClient(stack.listen) as client:
        await client.download(job.id, tmp_path / "out.wav")  # verifies size and SHA-256
    assert (tmp_path / "out.wav").stat().st_size == done.result.size_bytes
