"""Which providers and languages live workers can serve, from their KV adverts.

Polling the bucket (rather than a KV watch) keeps this correct across NATS
reconnects with no extra state. An advert counts while it was seen within the
advert TTL; while NATS is unreachable the last known adverts stand, so jobs
accepted during an outage are not refused for lack of fresh adverts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from dubbing import bus
from dubbing.jetstream import WORKER_ADVERT_TTL_SECONDS
from dubbing.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Seen:
    advert: bus.WorkerAdvert
    revision: int
    at: float  # monotonic time the revision was first seen


class WorkerRegistry:
    def __init__(
        self, nc: NATS, js: JetStreamContext, kv: KeyValue, *, poll_seconds: float = 2.0
    ) -> None:
        self._nc = nc
        self._js = js
        self._kv = kv
        self._poll_seconds = poll_seconds
        self._seen: dict[str, _Seen] = {}
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.debug("registry_refresh_failed", error=repr(exc))
            await asyncio.sleep(self._poll_seconds)

    async def refresh(self) -> None:
        async with self._lock:
            keys = await self._keys()
            now = time.monotonic()
            # An empty listing carries no information: the adverts bucket is in
            # memory, so a restarted nats-server lists nothing until workers
            # re-advertise. Known adverts then age out through live() instead.
            seen: dict[str, _Seen] = {} if keys else dict(self._seen)
            for key in keys:
                try:
                    entry = await self._kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):  # withdrawn or expired since listed
                    continue
                if entry.value is None:
                    continue
                revision = entry.revision or 0
                previous = self._seen.get(key)
                if previous is not None and previous.revision == revision:
                    seen[key] = previous
                else:
                    seen[key] = _Seen(bus.WorkerAdvert.decode(entry.value), revision, now)
            self._seen = seen

    async def _keys(self) -> list[str]:
        """The bucket's keys, from the stream's server-side state.

        Not ``KeyValue.keys()``: it ends its listing when the consumer reports no
        pending messages, which can be before a just-delivered key is processed, and
        then answers "no keys" for a bucket that has one (seen under load).
        """
        stream = f"KV_{bus.WORKERS_BUCKET}"
        prefix = f"$KV.{bus.WORKERS_BUCKET}."
        info = await self._js.stream_info(stream, subjects_filter=f"{prefix}>")
        subjects = info.state.subjects or {}
        return [subject.removeprefix(prefix) for subject in subjects]

    def live(self) -> list[bus.WorkerAdvert]:
        if not self._nc.is_connected:
            return [s.advert for s in self._seen.values()]
        horizon = time.monotonic() - WORKER_ADVERT_TTL_SECONDS
        return [s.advert for s in self._seen.values() if s.at >= horizon]

    def serving_now(self, provider: str) -> list[bus.WorkerAdvert]:
        return [a for a in self.live() if a.provider == provider]

    async def serving(self, provider: str) -> list[bus.WorkerAdvert]:
        """Live adverts for `provider`, refreshing before answering none.

        A refresh that fails (nats-py's key listing times out on a loaded server) is
        retried briefly: refusing a job because the listing failed would be a false
        FAILED_PRECONDITION. A refresh that succeeds and finds nobody answers at once.
        """
        found = self.serving_now(provider)
        if found or not self._nc.is_connected:
            return found
        for delay in (0.0, 0.2, 0.5, 1.0):
            await asyncio.sleep(delay)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("registry_refresh_failed", error=repr(exc), retry_in=delay)
                continue
            break
        return self.serving_now(provider)
