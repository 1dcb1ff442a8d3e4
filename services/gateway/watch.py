"""Fan-out of job changes to WatchJob streams in this gateway process.

One NATS subscription per process (``dubbing.changes.>``) wakes every local
watcher of the changed job; the watcher then reads the new versions from the
database, which stays the single source of truth. A lost notification costs
at most one poll interval, never a missed change.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dubbing import bus
from dubbing.logging import get_logger

log = get_logger(__name__)


class WatchHub:
    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._nc: NATS | None = None
        self._sub: Subscription | None = None

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        self._sub = await nc.subscribe(f"{bus.CHANGES_SUBJECT_PREFIX}.>", cb=self._on_change)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_change(self, msg: Msg) -> None:
        self.notify(bus.job_id_from_subject(msg.subject))

    def notify(self, job_id: str) -> None:
        for event in self._listeners.get(job_id, ()):
            event.set()

    async def announce(self, job_id: str, sequence: int) -> None:
        """Tell every gateway (this one included, directly) that `job_id` changed."""
        self.notify(job_id)
        if self._nc is not None and self._nc.is_connected:
            try:
                await self._nc.publish(bus.change_subject(job_id), str(sequence).encode())
            except Exception as exc:  # other gateways fall back to polling
                log.debug("change_notify_failed", error=repr(exc))

    @contextmanager
    def listen(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._listeners[job_id].add(event)
        try:
            yield event
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(event)
                if not listeners:
                    del self._listeners[job_id]

    @property
    def watcher_count(self) -> int:
        return sum(len(v) for v in self._listeners.values())
