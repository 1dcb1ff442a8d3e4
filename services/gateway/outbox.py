"""The outbox relay: publishes committed jobs to the work queue.

SubmitDub commits the job and its outbox row in one transaction, and so does
every change that dispatches a new attempt (a retry, a reclaimed lease); the
store wakes the relay after such a commit. A crash between commit and publish
loses nothing: the row is still pending at the next start. ``Nats-Msg-Id``
(job id and attempt) makes a repeated publish within the stream's duplicate
window harmless, e.g. when two replicas' relays publish the same row. A retry's
row waits in the outbox until its backoff has passed. The stream sequence each
message got is recorded, so the reconciler can tell a message the bus lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.js import JetStreamContext

from dubbing.logging import get_logger
from gateway.store import JobStore, OutboxRow

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        store: JobStore,
        js: JetStreamContext,
        *,
        batch_size: int = 256,
        idle_seconds: float = 1.0,
        publish_timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._js = js
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._publish_timeout = publish_timeout
        self._wake = store.outbox_ready

    def poke(self) -> None:
        """Something was committed: publish now rather than at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            try:
                rows = await self._store.pending_outbox(self._batch_size)
                sent = await self._publish(rows)
                if sent:
                    await self._store.mark_published(sent, time.time())
                if len(sent) < len(rows):
                    raise ConnectionError(f"published {len(sent)} of {len(rows)} jobs")
                backoff = 0.1
                if len(rows) == self._batch_size:
                    continue  # more may be waiting
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NATS or the database is away; everything stays in the outbox.
                log.warning("outbox_relay_retrying", error=str(exc), backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_seconds)

    async def _publish(self, rows: list[OutboxRow]) -> list[tuple[int, int]]:
        """Publish the batch with pipelined acks; return (row id, stream sequence) of
        the rows that JetStream stored.

        ``publish_async`` sends every message before waiting for any ack, over one
        shared reply subscription: far cheaper per job than a request per message.
        """
        if not rows:
            return []
        futures: dict[asyncio.Future[Any], int] = {}
        try:
            for row in rows:
                # wait_stall=None: no timer task per message, so the loop does not
                # yield between publishes and the batch goes out in a few writes.
                future = await self._js.publish_async(
                    row.subject, row.payload, headers=row.headers, wait_stall=None
                )
                futures[future] = row.id
        except Exception as exc:  # disconnected or stalled: keep what was sent
            log.warning("outbox_publish_failed", error=repr(exc))
        if not futures:
            return []
        done, pending = await asyncio.wait(futures, timeout=self._publish_timeout)
        for future in pending:
            future.cancel()
        stored: list[tuple[int, int]] = []
        for future in done:
            if future.cancelled():
                continue
            if (error := future.exception()) is not None:
                log.warning("outbox_publish_refused", error=repr(error))
                continue
            stored.append((futures[future], int(future.result().seq)))
        return stored
