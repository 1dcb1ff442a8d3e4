"""Applying workers' lease renewals, and telling superseded runs to stop.

Workers renew the leases of their runs every third of the lease, one message
per worker on the leases stream; a durable consumer shared by the gateway
replicas applies each renewal in one transaction and acks it after the commit.
A lease that is not renewed runs out and the reconciler takes the job back.

A run the database no longer lets report (its job ended, another attempt or
another run of its attempt holds the job) is told so on the job's stop subject,
so that a worker that woke up from a stall, or got a message twice, stops
instead of doing work nobody will use.
"""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from dubbing import bus
from dubbing.logging import get_logger
from gateway.consumer import consume
from gateway.store import JobStore

log = get_logger(__name__)


class LeaseApplier:
    def __init__(self, store: JobStore, nc: NATS, js: JetStreamContext) -> None:
        self._store = store
        self._nc = nc
        self._js = js

    async def run(self) -> None:
        await consume(
            self._js,
            stream=bus.LEASES_STREAM,
            durable=bus.GATEWAY_LEASES_CONSUMER,
            subject=f"{bus.LEASES_SUBJECT_PREFIX}.>",
            handle=self._apply,
        )

    async def _apply(self, msg: Msg) -> None:
        try:
            renewal = bus.LeaseRenewal.decode(msg.data)
        except Exception as exc:
            log.error("invalid_lease_renewal", subject=msg.subject, error=repr(exc))
            await msg.term()
            return
        try:
            superseded = await self._store.renew_leases(renewal.runs, time.time())
        except Exception as exc:
            # The database is away: the reconciler cannot act either (it waits
            # until every renewal is applied), so nothing expires meanwhile.
            log.warning("lease_renewal_failed", worker_id=renewal.worker_id, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        for ref in superseded:
            log.info(
                "run_superseded",
                job_id=ref.job_id,
                attempt=ref.attempt,
                run_id=ref.run_id,
                worker_id=renewal.worker_id,
            )
            await self._nc.publish(
                bus.cancel_subject(ref.job_id), bus.StopNotice(run_id=ref.run_id).encode()
            )
        await msg.ack()
