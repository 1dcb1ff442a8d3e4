"""The worker process: lifecycle, subscriptions, adverts.

It connects, declares the topology, and for each :class:`worker.handlers.JobHandler`
it has (one per job kind and provider) subscribes to that (kind, provider)'s work
queue and feeds what it fetches, a slot at a time, to :class:`worker.delivery.Delivery`,
which owns everything about one message. It renews its runs' leases
(:class:`worker.leases.LeaseKeeper`), passes stop notices on, and advertises what its
handlers serve. On SIGTERM it stops fetching, lets delivery drain (grace, then hand
back), withdraws its adverts and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.kv import KeyValue

from dubbing import bus, jetstream
from dubbing.logging import get_logger
from dubbing.settings import WorkerSettings
from worker import providers as providers_mod
from worker.background import BackgroundFetcher
from worker.delivery import Delivery
from worker.handlers import JobHandler, TranscriptHandler
from worker.leases import LeaseKeeper
from worker.providers import Provider

log = get_logger(__name__)


class Worker:
    def __init__(
        self, settings: WorkerSettings, providers: dict[str, Provider] | None = None
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        names = [p.strip() for p in settings.providers.split(",") if p.strip()]
        self.providers = providers or {name: providers_mod.create(name) for name in names}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._stopping = asyncio.Event()
        # Set once the worker is claiming jobs and its advert is stored.
        self.ready = asyncio.Event()
        self._nc: NATS | None = None
        self._delivery: Delivery | None = None
        self._handlers: list[JobHandler] = []
        self._workers_kv: KeyValue | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down gracefully."""
        s = self.settings
        self._nc = nc = await jetstream.connect(
            s.nats_url,
            name=f"dubbing-worker {self.worker_id}",
            connect_timeout=s.connect_timeout_seconds,
        )
        js = nc.jetstream()
        await jetstream.ensure_topology(js, replicas=s.stream_replicas)
        results = await jetstream.results_store(js)
        fetcher = BackgroundFetcher(await jetstream.assets_store(js))
        self._workers_kv = await jetstream.workers_kv(js)
        leases = LeaseKeeper(js, worker_id=self.worker_id, lease_seconds=s.ack_wait_seconds)
        self._delivery = delivery = Delivery(
            js,
            settings=s,
            worker_id=self.worker_id,
            requests=await jetstream.requests_store(js),
            cancelled=await jetstream.cancelled_kv(js),
            leases=leases,
        )
        self._handlers = [
            TranscriptHandler(name, provider, results=results, fetcher=fetcher, work_dir=s.work_dir)
            for name, provider in self.providers.items()
            if provider.capabilities.transcript_dubbing
        ]
        renewing = asyncio.create_task(leases.run(), name="lease-keeper")
        cancel_sub = await nc.subscribe(f"{bus.CANCEL_SUBJECT_PREFIX}.*", cb=self._on_stop)
        loops = [
            asyncio.create_task(self._fetch_loop(await self._subscribe(js, h), h))
            for h in self._handlers
        ]
        # Ready means discoverable: the first advert is stored before we say so.
        await self._advertise_once()
        advert = asyncio.create_task(self._advertise())
        self.ready.set()
        log.info(
            "worker_ready",
            worker_id=self.worker_id,
            providers=list(self.providers),
            concurrency=s.concurrency,
        )

        await stop.wait()
        log.info("worker_stopping", in_flight=delivery.in_flight)
        self._stopping.set()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await delivery.drain(s.grace_seconds)
        for task in (advert, renewing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._withdraw_adverts()
        await cancel_sub.unsubscribe()
        for provider in self.providers.values():
            await provider.aclose()
        await jetstream.close(nc)
        log.info("worker_stopped")

    async def _subscribe(
        self, js: JetStreamContext, handler: JobHandler
    ) -> JetStreamContext.PullSubscription:
        """The work queue of (kind, provider), shared by every worker serving it."""
        subject = bus.job_subject(handler.kind, handler.provider_name)
        durable = bus.worker_consumer_name(handler.kind, handler.provider_name)
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            # Only the claim (STARTED stored, then ack) happens under the ack wait.
            ack_wait=self.settings.ack_wait_seconds,
            # Unlimited: attempts are counted by the gateway's database, which
            # a nats-server crash cannot reset; a message is redelivered only
            # when its claim did not complete, and must then be delivered again.
            max_deliver=-1,
            filter_subject=subject,
        )
        # Creates the consumer, or converges one an older version made.
        await js.add_consumer(bus.JOBS_STREAM, config=config)
        return await js.pull_subscribe(subject, durable=durable, stream=bus.JOBS_STREAM)

    # -- claiming ----------------------------------------------------------------

    async def _fetch_loop(
        self, sub: JetStreamContext.PullSubscription, handler: JobHandler
    ) -> None:
        assert self._delivery is not None
        while not self._stopping.is_set():
            await self._slots.acquire()
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):  # empty: nothing to do yet
                self._slots.release()
                continue
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:  # disconnected, reconnecting: back off, try again
                self._slots.release()
                log.warning("fetch_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._delivery.handle(msg, handler))
                task.add_done_callback(lambda _t: self._slots.release())

    async def _on_stop(self, msg: Msg) -> None:
        assert self._delivery is not None
        job_id = bus.job_id_from_subject(msg.subject)
        try:
            notice = bus.StopNotice.decode(msg.data)
        except Exception as exc:
            log.warning("invalid_stop_notice", job_id=job_id, error=repr(exc))
            return
        self._delivery.stop(job_id, notice)

    # -- advertising -------------------------------------------------------------

    def _adverts(self) -> list[bus.WorkerAdvert]:
        out = []
        for name, provider in self.providers.items():
            caps = provider.capabilities
            # What this worker serves is what its handlers do, not what a provider could.
            kinds = {h.kind for h in self._handlers if h.provider_name == name}
            out.append(
                bus.WorkerAdvert(
                    worker_id=self.worker_id,
                    provider=name,
                    transcript_dubbing=bus.JobKind.TRANSCRIPT in kinds,
                    media_dubbing=bus.JobKind.MEDIA in kinds,
                    languages=[
                        bus.LanguageAdvert(
                            code=lang.code, name=lang.name, genders=[g.value for g in lang.genders]
                        )
                        for lang in caps.languages
                    ],
                    min_speed=caps.min_speed,
                    max_speed=caps.max_speed,
                    concurrency=self.settings.concurrency,
                    time=time.time(),
                )
            )
        return out

    async def _advertise_once(self) -> None:
        assert self._workers_kv is not None
        for advert in self._adverts():
            await self._workers_kv.put(advert.key, advert.encode())

    async def _advertise(self) -> None:
        while True:
            await asyncio.sleep(self.settings.advert_interval_seconds)
            try:
                await self._advertise_once()
            except Exception as exc:  # NATS away: the next tick tries again
                log.warning("advert_failed", error=repr(exc))

    async def _withdraw_adverts(self) -> None:
        assert self._workers_kv is not None
        for advert in self._adverts():
            with contextlib.suppress(Exception):
                await self._workers_kv.delete(advert.key)
