"""The outbox relay: publishes committed jobs to the work queue.

SubmitDub commits the job and its outbox row in one transaction, and so does
every change that dispatches a new attempt (a retry, a reclaimed lease); the
store wakes the relay after such a commit. A crash between commit and publish
loses nothing: the row is still pending at the next start. ``Nats-Msg-Id``
(job id and attempt) makes a repeated publish within the stream's duplicate
window harmless, e.g. when two replicas' relays publish the same row. A retry's
row waits in the outbox until its backoff has passed. The stream sequence each
message got is recorded, so the reconciler can tell a message the bus lost.

A request too large for one NATS message (``max_payload``, 1 MiB by default) is
stored in the requests bucket first and the message names it: every request the
gateway accepts can be delivered, and a large one never holds up the rows behind
it. It is stored again at every dispatch, which renews its age in the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError
from nats.js.object_store import ObjectStore

from dubbing import artifacts, bus
from dubbing.errors import Code, Reason
from dubbing.logging import get_logger
from gateway.store import JobStore, OutboxRow

log = get_logger(__name__)

# A row the work queue keeps refusing (while NATS answers) fails its job after
# this long, instead of being retried for ever; until then it is retried on its
# own backoff, and the rows behind it go out as usual. Long enough to ride out a
# JetStream leader election or a stream being edited.
REFUSED_FOR_SECONDS = 60.0


class OutboxRelay:
    def __init__(
        self,
        store: JobStore,
        js: JetStreamContext,
        *,
        requests: ObjectStore,
        max_payload: int,
        batch_size: int = 256,
        idle_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        refused_for_seconds: float = REFUSED_FOR_SECONDS,
    ) -> None:
        self._store = store
        self._js = js
        self._requests = requests
        self._max_payload = max_payload
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._publish_timeout = publish_timeout
        self._wake = store.outbox_ready
        # outbox row id -> (first refusal, refusals so far, not retried before)
        self._refused: dict[int, tuple[float, int, float]] = {}
        self._refused_for = refused_for_seconds

    async def run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            try:
                now = time.monotonic()
                pending = await self._store.pending_outbox(self._batch_size)
                rows = [r for r in pending if self._refused.get(r.id, (0, 0, 0.0))[2] <= now]
                sent, refused = await self._publish(rows)
                if sent:
                    await self._store.mark_published(sent, time.time())
                await self._count_refusals(refused)
                if len(sent) + len(refused) < len(rows):
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

    async def _count_refusals(self, refused: list[tuple[OutboxRow, str]]) -> None:
        """Hold back each refused row on its own backoff; fail the job of one refused for
        REFUSED_FOR_SECONDS."""
        now = time.monotonic()
        for row, error in refused:
            first, count, _ = self._refused.get(row.id, (now, 0, 0.0))
            count += 1
            if now - first < self._refused_for:
                self._refused[row.id] = (first, count, now + min(5.0, 0.1 * 2**count))
                continue
            job = await self._store.fail(
                row.job_id,
                time.time(),
                code=Code.INTERNAL,
                reason=Reason.JOB_UNDELIVERABLE,
                message=f"the work queue refused the job {count} times: {error}",
            )
            await self._store.mark_published([(row.id, 0)], time.time())
            del self._refused[row.id]
            log.error("job_undeliverable", job_id=row.job_id, error=error, failed=job is not None)

    async def _publish(
        self, rows: list[OutboxRow]
    ) -> tuple[list[tuple[int, int]], list[tuple[OutboxRow, str]]]:
        """Publish the batch with pipelined acks. Returns (row id, stream sequence) of
        the rows that JetStream stored, and the rows it refused with its answer.

        ``publish_async`` sends every message before waiting for any ack, over one
        shared reply subscription: far cheaper per job than a request per message.
        It does not say why a message was not stored (a refusal goes to the
        connection's error callback and the ack never comes), so a row left without
        an ack is published once more on its own, which does say.
        """
        if not rows:
            return [], []
        futures: dict[asyncio.Future[Any], tuple[OutboxRow, bytes, dict[str, str]]] = {}
        unacked: list[tuple[OutboxRow, bytes, dict[str, str]]] = []
        try:
            for row in rows:
                try:
                    payload, headers = await self._message(row)
                except Exception as exc:  # NATS away: this row waits, the others go
                    log.warning("outbox_request_store_failed", job_id=row.job_id, error=repr(exc))
                    continue
                if row.id in self._refused:  # refused before: straight to the slow path
                    unacked.append((row, payload, headers))
                    continue
                # wait_stall=None: no timer task per message, so the loop does not
                # yield between publishes and the batch goes out in a few writes.
                future = await self._js.publish_async(
                    row.subject, payload, headers=headers, wait_stall=None
                )
                futures[future] = (row, payload, headers)
        except Exception as exc:  # disconnected or stalled: keep what was sent
            log.warning("outbox_publish_failed", error=repr(exc))
        done: set[asyncio.Future[Any]] = set()
        if futures:
            done, pending = await asyncio.wait(futures, timeout=self._publish_timeout)
            for future in pending:
                future.cancel()
        stored: list[tuple[int, int]] = []
        for future in futures:
            if future in done and not future.cancelled() and future.exception() is None:
                stored.append((futures[future][0].id, int(future.result().seq)))
            else:
                unacked.append(futures[future])
        refused: list[tuple[OutboxRow, str]] = []
        for row, payload, headers in unacked:
            try:
                ack = await self._js.publish(
                    row.subject, payload, headers=headers, timeout=self._publish_timeout
                )
            except ServiceUnavailableError as exc:  # no leader right now: transient
                log.warning("outbox_publish_failed", job_id=row.job_id, error=repr(exc))
            except APIError as exc:  # JetStream answered: no
                log.warning("outbox_publish_refused", job_id=row.job_id, error=repr(exc))
                refused.append((row, repr(exc)))
            except Exception as exc:  # NATS away: it stays in the outbox
                log.warning("outbox_publish_failed", job_id=row.job_id, error=repr(exc))
                break
            else:
                stored.append((row.id, int(ack.seq)))
        return stored, refused

    async def _message(self, row: OutboxRow) -> tuple[bytes, dict[str, str]]:
        """The payload and headers to publish: the request itself, or a reference to it."""
        if _message_size(row.subject, row.headers, row.payload) <= self._max_payload:
            return row.payload, row.headers
        name = bus.request_object_name(row.job_id)
        await artifacts.put(self._requests, name, row.payload)
        log.info("outbox_request_by_reference", job_id=row.job_id, bytes=len(row.payload))
        return b"", {**row.headers, bus.HEADER_REQUEST_OBJECT: name}


def _message_size(subject: str, headers: dict[str, str], payload: bytes) -> int:
    """What nats-server counts against max_payload: headers block and payload, with
    room for the protocol line."""
    header_bytes = len("NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items())
    return header_bytes + len(payload) + len(subject) + 64
