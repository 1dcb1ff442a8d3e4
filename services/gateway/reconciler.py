"""The reconciler: the database is the source of truth, and the bus is made to agree.

Two things can leave a job that nothing will ever move on:

* **A run that went silent.** A RUNNING job's run renews its lease every third
  of ``AttemptPolicy.lease_seconds``; a worker that died, froze or lost the
  network stops renewing. Its job is taken back (``JobStore.reclaim``): the
  next attempt is dispatched, or after the last the job fails with
  MAX_DELIVERIES_EXCEEDED. Whether or not a gateway was up when the worker
  died: the expired lease stays in the database until one looks.
* **A message the bus lost.** nats-server acknowledges a publish before it
  fsyncs, so a crash can lose a QUEUED job's message. When the work queue
  holds fewer messages than there are QUEUED jobs waiting on a published
  attempt, each waiting job's message is looked up where JetStream stored it;
  a missing one is dispatched again as the next attempt.

Silence is only trusted when it means something. Expired leases are acted on
only when this gateway has been connected to NATS for a whole lease (so every
live worker had the chance to renew through it) and every renewal stored in
the leases stream has been applied. A missing message counts as lost only
once every event stored after it was found missing has been applied, because
a worker acks its message right after storing its STARTED event: a claimed
job is RUNNING by then. Every action is conditional in the database (the
same attempt, still expired, still unclaimed, under the row lock), so several
gateway replicas reconciling at once dispatch one attempt, not several.

Cheap when idle: a round is two NATS requests and one indexed query that
returns only expired leases (none when all is well), plus one COUNT of waiting
jobs; messages are looked up one by one only when the counts disagree.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from dubbing import bus, jetstream
from dubbing.jetstream import Connectivity
from dubbing.logging import get_logger
from dubbing.v1 import dubbing_pb2 as pb
from gateway.store import JobStore, Waiting
from gateway.watch import WatchHub

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Round:
    """What one reconciliation round did."""

    leases_checked: bool  # False: not connected for a lease yet, or renewals pending
    reclaimed: int  # jobs taken back from a silent run (re-dispatched or failed)
    lost: int  # QUEUED jobs whose message was gone, dispatched again


class Reconciler:
    def __init__(
        self,
        store: JobStore,
        js: JetStreamContext,
        hub: WatchHub,
        connectivity: Connectivity,
        *,
        interval: float | None = None,
        batch: int = 200,
    ) -> None:
        self._store = store
        self._js = js
        self._hub = hub
        self._connectivity = connectivity
        self._lease = store.policy.lease_seconds
        # A third of the lease: a dead run is noticed at most a third late.
        self._interval = interval if interval is not None else self._lease / 3
        self._batch = batch

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a period, not a wait for something
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the database away: next round
                log.warning("reconcile_failed", error=repr(exc))

    async def reconcile(self) -> Round:
        """One round; see the module's docstring for what it checks and when."""
        if self._connectivity.up_for() < self._lease:
            done = Round(leases_checked=False, reclaimed=0, lost=0)
        else:
            reclaimed = None
            if await jetstream.caught_up(self._js, bus.LEASES_STREAM, bus.GATEWAY_LEASES_CONSUMER):
                reclaimed = await self._reclaim_expired()
            lost = await self._redispatch_lost()
            done = Round(reclaimed is not None, reclaimed or 0, lost)
        log.debug(
            "reconcile_round",
            leases_checked=done.leases_checked,
            reclaimed=done.reclaimed,
            lost=done.lost,
        )
        return done

    async def _reclaim_expired(self) -> int:
        now = time.time()
        count = 0
        for job_id, attempt in await self._store.expired_leases(now, self._batch):
            job = await self._store.reclaim(job_id, attempt, now)
            if job is None:
                continue  # renewed, or another replica took it back meanwhile
            count += 1
            log.warning(
                "job_lease_expired",
                job_id=job_id,
                attempt=attempt,
                outcome=pb.Job.State.Name(job.state),
            )
            await self._hub.announce(job.id, job.sequence)
        return count

    async def _redispatch_lost(self) -> int:
        # Only attempts published a lease ago or more: a fresh one is being claimed.
        cutoff = time.time() - self._lease
        waiting = await self._store.count_waiting(cutoff)
        if not waiting:
            return 0
        held = (await self._js.stream_info(bus.JOBS_STREAM)).state.messages
        if held >= waiting:
            return 0
        missing = [
            w for w in await self._store.waiting(cutoff, self._batch) if not await self._held(w)
        ]
        if not missing:
            return 0
        if not await jetstream.caught_up(self._js, bus.EVENTS_STREAM, bus.GATEWAY_EVENTS_CONSUMER):
            return 0  # a claim may still be on its way: look again next round
        count = 0
        for w in missing:
            if await self._store.redispatch(w.job_id, w.attempt, time.time()):
                count += 1
                log.warning(
                    "job_message_lost", job_id=w.job_id, attempt=w.attempt, stream_seq=w.stream_seq
                )
        return count

    async def _held(self, waiting: Waiting) -> bool:
        """Whether the work queue still holds this attempt's message."""
        if not waiting.stream_seq:
            return True  # published by a gateway that did not record where: assume so
        try:
            msg = await self._js.get_msg(bus.JOBS_STREAM, seq=waiting.stream_seq)
        except NotFoundError:
            return False
        headers = msg.headers or {}
        # After a crash that lost the stream's tail, the sequence may hold another message.
        return headers.get(bus.HEADER_JOB_ID) == waiting.job_id and headers.get(
            bus.HEADER_ATTEMPT
        ) == str(waiting.attempt)
