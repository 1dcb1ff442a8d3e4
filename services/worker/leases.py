"""Keeping the leases of this worker's runs alive.

Once a run has claimed its message (STARTED stored, message acked), nothing on
the bus keeps its job: its lease in the gateway's database does. One task per
worker sends one :class:`dubbing.bus.LeaseRenewal` for all its runs every
third of the lease, so a live run survives two lost renewals in a row; a worker
that dies, freezes or is cut off stops renewing and the gateway takes its jobs
back. A worker with nothing running sends nothing.
"""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from dubbing import bus
from dubbing.logging import get_logger

log = get_logger(__name__)


class LeaseKeeper:
    def __init__(self, js: JetStreamContext, *, worker_id: str, lease_seconds: float) -> None:
        self._js = js
        self._worker_id = worker_id
        self._interval = lease_seconds / 3
        self._runs: dict[str, bus.RunRef] = {}

    def add(self, run: bus.RunRef) -> None:
        self._runs[run.run_id] = run

    def discard(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a period, not a wait for something
            await self.renew()

    async def renew(self) -> None:
        """Send one renewal for every run now in flight (nothing when there is none)."""
        if not self._runs:
            return
        renewal = bus.LeaseRenewal(
            worker_id=self._worker_id, time=time.time(), runs=list(self._runs.values())
        )
        try:
            await self._js.publish(renewal.subject, renewal.encode(), timeout=self._interval)
        except Exception as exc:  # NATS away: the next tick tries again
            log.warning("lease_renewal_failed", runs=len(renewal.runs), error=repr(exc))
