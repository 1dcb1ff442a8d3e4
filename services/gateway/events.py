"""Applying worker events to the job records.

A durable pull consumer on the events stream, shared by every gateway replica.
Each event goes through the store (which fences by attempt and run, and drops
duplicates); an event is acked only after its change is committed, so a
gateway crash replays it and the replay is a no-op. Applied changes are
announced to watchers.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from dubbing import bus
from dubbing.logging import get_logger
from gateway.consumer import consume
from gateway.store import JobStore
from gateway.watch import WatchHub

log = get_logger(__name__)


class EventApplier:
    def __init__(
        self, store: JobStore, js: JetStreamContext, hub: WatchHub, *, batch: int = 128
    ) -> None:
        self._store = store
        self._js = js
        self._hub = hub
        self._batch = batch

    async def run(self) -> None:
        await consume(
            self._js,
            stream=bus.EVENTS_STREAM,
            durable=bus.GATEWAY_EVENTS_CONSUMER,
            subject=f"{bus.EVENTS_SUBJECT_PREFIX}.>",
            handle=self._apply,
            batch=self._batch,
        )

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
