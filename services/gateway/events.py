"""Applying worker events to the job records.

A durable pull consumer on the events stream, shared by every gateway replica.
Each event goes through the store (which fences by attempt and drops
duplicates); an event is acked only after its change is committed, so a
gateway crash replays it and the replay is a no-op. Applied changes are
announced to watchers.

Also listens for JetStream's MAX_DELIVERIES advisory: a job whose worker kept
crashing exhausts its deliveries without any worker reporting a failure, and
must not stay RUNNING forever.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from dubbing import bus
from dubbing.errors import Reason
from dubbing.logging import get_logger
from gateway.store import JobStore
from gateway.watch import WatchHub

log = get_logger(__name__)

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"


class EventApplier:
    def __init__(
        self, store: JobStore, nc: NATS, js: JetStreamContext, hub: WatchHub, *, batch: int = 128
    ) -> None:
        self._store = store
        self._nc = nc
        self._js = js
        self._hub = hub
        self._batch = batch

    async def run(self) -> None:
        sub = await self._js.pull_subscribe(
            f"{bus.EVENTS_SUBJECT_PREFIX}.>",
            durable=bus.GATEWAY_EVENTS_CONSUMER,
            stream=bus.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30.0,
                max_ack_pending=10_000,
            ),
        )
        advisory = await self._nc.subscribe(
            MAX_DELIVERIES_ADVISORY.format(stream=bus.JOBS_STREAM), cb=self._on_max_deliveries
        )
        try:
            while True:
                try:
                    msgs = await sub.fetch(self._batch, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):  # empty: nothing to do yet
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS away; nats-py reconnects underneath
                    log.warning("event_fetch_failed", error=repr(exc))
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._apply(msg)
        finally:
            await advisory.unsubscribe()

    async def _apply(self, msg: Msg) -> None:
        try:
            event = bus.JobEvent.decode(msg.data)
        except Exception as exc:
            log.error("invalid_event", subject=msg.subject, error=repr(exc))
            await msg.term()
            return
        try:
            job = await self._store.apply_event(event)
        except Exception as exc:
            # Usually the database is away: leave the event for a later delivery.
            log.warning("event_apply_failed", job_id=event.job_id, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        if job is not None:
            await self._hub.announce(job.id, job.sequence)
        else:
            log.debug("event_ignored", job_id=event.job_id, attempt=event.attempt, seq=event.seq)
        await msg.ack()

    async def _on_max_deliveries(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            stream_seq = int(advisory["stream_seq"])
            stored = await self._js.get_msg(bus.JOBS_STREAM, seq=stream_seq)
            job_id = (stored.headers or {}).get(bus.HEADER_JOB_ID)
            if not job_id:
                return
            job = await self._store.fail(
                job_id,
                time.time(),
                code="UNAVAILABLE",
                reason=Reason.MAX_DELIVERIES_EXCEEDED,
                message=f"no worker completed the job in {advisory.get('deliveries')} deliveries",
            )
            # The message stays in a work-queue stream after max_deliver: remove it.
            await self._js.delete_msg(bus.JOBS_STREAM, stream_seq)
            if job is not None:
                log.warning("job_exhausted_deliveries", job_id=job_id)
                await self._hub.announce(job.id, job.sequence)
        except Exception as exc:
            log.warning("max_deliveries_advisory_failed", error=repr(exc))
