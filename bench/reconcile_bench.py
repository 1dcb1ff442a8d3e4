"""What a reconciler round costs: ``make bench-reconcile``.

A real nats-server and a SQLite store of the gateway's (synchronous=FULL), filled
with a history: many finished jobs, some running with live leases, some queued
and published to the work queue. The reconciler is run round after round, as
the gateway runs it, and the wall and CPU time of a round is printed for each
shape of database, with the number of database reads and NATS requests a
round made. A healthy database should cost the same whatever its size: the
reconciler looks only at expired leases and, when the counts disagree, at
queued jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from dubbing import bus, jetstream, jobstate
from dubbing.devstack import NATS_READY, NatsServer
from gateway.events import EventApplier
from gateway.leases import LeaseApplier
from gateway.reconciler import Reconciler
from gateway.store import JobStore, new_job_id, open_store
from gateway.watch import WatchHub
from tests.helpers import transcript_request


async def fill(store: JobStore, finished: int, running: int, queued: int) -> list[bus.RunRef]:
    """Jobs in the three shapes; returns the running ones' runs (to renew)."""
    policy = store.policy
    runs: list[bus.RunRef] = []
    total = finished + running + queued
    for start in range(0, total, 500):
        batch = []
        for _ in range(start, min(total, start + 500)):
            request = transcript_request()
            request.provider = "local"
            job = jobstate.new_job(new_job_id(), request, time.time())
            batch.append(
                store.submit(job, request_hash=job.id, message=jobstate.job_message(job, 1, policy))
            )
        await asyncio.gather(*batch)
    rows = await store.pending_outbox(total + 1)
    await store.mark_published([(r.id, r.id) for r in rows[finished + running :]], time.time())
    await store.mark_published([(r.id, 0) for r in rows[: finished + running]], time.time())
    now = time.time()
    events = []
    for i, row in enumerate(rows[: finished + running]):
        run_id = f"run{i}"
        events.append(
            bus.JobEvent(row.job_id, 1, 1, bus.EventType.STARTED, "bench", now, run_id=run_id)
        )
        if i < finished:
            result = bus.ResultInfo(f"{row.job_id}/x", "wav", 24000, 1.0, 1, "00" * 32)
            events.append(
                bus.JobEvent(
                    row.job_id, 1, 2, bus.EventType.SUCCEEDED, "bench", now, run_id, result=result
                )
            )
        else:
            runs.append(bus.RunRef(row.job_id, 1, run_id))
    for start in range(0, len(events), 500):
        await asyncio.gather(*(store.apply_event(e) for e in events[start : start + 500]))
    return runs


async def measure(
    nats_url: str, db: Path, finished: int, running: int, queued: int, rounds: int
) -> str:
    lease = 3.0
    store = await open_store(f"sqlite:///{db}", policy=jobstate.AttemptPolicy(lease_seconds=lease))
    connectivity = jetstream.Connectivity()
    nc = await jetstream.connect(
        nats_url, name="bench", connect_timeout=10, connectivity=connectivity
    )
    js = nc.jetstream()
    await jetstream.ensure_topology(js)
    await js.purge_stream(bus.JOBS_STREAM)
    hub = WatchHub()
    try:
        runs = await fill(store, finished, running, queued)
        # The queued jobs' messages, as the relay would have published them.
        for _ in range(queued):
            await js.publish(bus.job_subject(bus.JobKind.TRANSCRIPT, "local"), b"x")

        async def renew() -> None:  # as the workers would, through the leases stream
            renewal = bus.LeaseRenewal("bench", time.time(), runs)
            while True:
                if runs:
                    await js.publish(renewal.subject, renewal.encode())
                await asyncio.sleep(lease / 3)

        tasks = [
            asyncio.create_task(EventApplier(store, js, hub).run()),
            asyncio.create_task(LeaseApplier(store, nc, js).run()),
            asyncio.create_task(renew()),
        ]
        # The reconciler trusts leases once connected for a whole lease.
        await asyncio.sleep(lease)
        reconciler = Reconciler(store, js, hub, connectivity)
        checked = 0
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            done = await reconciler.reconcile()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            # A round skips the lease check while a renewal is being applied.
            checked += done.leases_checked
            assert done.reclaimed == 0 and done.lost == 0, done
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await jetstream.close(nc)
        await store.close()
    jobs = finished + running + queued
    return (
        f"| {jobs:,} | {finished:,} / {running:,} / {queued:,} | "
        f"{statistics.median(wall) * 1e3:.2f} ms | {max(wall) * 1e3:.2f} ms | "
        f"{statistics.median(cpu) * 1e3:.2f} ms | {checked} of {rounds} |"
    )


async def main_async(rounds: int) -> None:
    shapes = [(0, 0, 0), (10_000, 0, 0), (10_000, 200, 0), (10_000, 200, 2_000)]
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start().wait_for(NATS_READY)
        try:
            print(
                "| jobs | finished / running / queued | round p50 | round max | CPU p50 "
                "| rounds that checked leases |"
            )
            print("|---|---|---|---|---|---|")
            for i, (finished, running, queued) in enumerate(shapes):
                db = Path(tmp) / f"jobs-{i}.db"
                print(await measure(server.url, db, finished, running, queued, rounds))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds))


if __name__ == "__main__":
    main()
