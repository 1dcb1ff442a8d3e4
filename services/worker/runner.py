"""The worker process: claims jobs from JetStream, runs them, reports, acks.

Delivery contract (see ``dubbing.bus``):

* Pull consumer with explicit acks. While a job runs, ``in_progress()`` every
  ack_wait/3 keeps JetStream from redelivering it; a worker that dies simply
  stops heartbeating and the job goes to another worker as the next attempt.
* Transient failure: a RETRYING event, then ``nak(delay)`` with exponential
  backoff, until the delivery count reaches ``max_deliver``; then FAILED + term.
* Permanent failure (bad input the gateway could not see, unsupported option):
  FAILED with the provider's reason, then ``term()``.
* The job is acked only after its SUCCEEDED/FAILED event is stored in the
  events stream, so an ack never outruns the report.
* SIGTERM: stop fetching, give in-flight jobs ``grace_seconds`` to finish, hand
  the rest back (RETRYING + nak without delay), withdraw the advert, drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from dubbing import artifacts, bus, jetstream
from dubbing.errors import Reason
from dubbing.logging import get_logger
from dubbing.settings import WorkerSettings
from dubbing.v1 import dubbing_pb2 as pb
from worker import providers as providers_mod
from worker.background import BackgroundFetcher, BackgroundRejected, BackgroundUnavailable
from worker.events import EventPublisher
from worker.providers import PermanentProviderError, Provider, TransientProviderError
from worker.transcript import dub_transcript

log = get_logger(__name__)


@dataclass
class _InFlight:
    task: asyncio.Task[None]
    # Why the task is being cancelled: "client" (CancelJob) or "shutdown".
    cancel_reason: str = ""
    started: float = field(default_factory=time.monotonic)


class Worker:
    def __init__(
        self, settings: WorkerSettings, providers: dict[str, Provider] | None = None
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        names = [p.strip() for p in settings.providers.split(",") if p.strip()]
        self.providers = providers or {name: providers_mod.create(name) for name in names}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._inflight: dict[str, _InFlight] = {}
        self._stopping = asyncio.Event()
        # Set once the worker is claiming jobs and its advert is stored.
        self.ready = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._results: ObjectStore | None = None
        self._fetcher: BackgroundFetcher | None = None
        self._cancelled: KeyValue | None = None
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
        self._js = js = nc.jetstream()
        await jetstream.ensure_topology(js, replicas=s.stream_replicas)
        self._results = await jetstream.results_store(js)
        self._fetcher = BackgroundFetcher(await jetstream.assets_store(js))
        self._cancelled = await jetstream.cancelled_kv(js)
        self._workers_kv = await jetstream.workers_kv(js)
        cancel_sub = await nc.subscribe(f"{bus.CANCEL_SUBJECT_PREFIX}.*", cb=self._on_cancel)

        loops = []
        for name, provider in self.providers.items():
            kind = bus.JobKind.TRANSCRIPT
            sub = await js.pull_subscribe(
                bus.job_subject(kind, name),
                durable=bus.worker_consumer_name(kind, name),
                stream=bus.JOBS_STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=s.ack_wait_seconds,
                    max_deliver=s.max_deliver,
                    filter_subject=bus.job_subject(kind, name),
                ),
            )
            loops.append(asyncio.create_task(self._fetch_loop(sub, provider)))
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
        log.info("worker_stopping", in_flight=len(self._inflight))
        self._stopping.set()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self._drain_in_flight()
        advert.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await advert
        await self._withdraw_adverts()
        await cancel_sub.unsubscribe()
        for provider in self.providers.values():
            await provider.aclose()
        await jetstream.close(nc)
        log.info("worker_stopped")

    async def _drain_in_flight(self) -> None:
        tasks = [f.task for f in self._inflight.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
        for job_id, inflight in list(self._inflight.items()):
            if inflight.task in pending:
                log.info("handing_back_job", job_id=job_id)
                inflight.cancel_reason = "shutdown"
                inflight.task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- claiming ----------------------------------------------------------------

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription, provider: Provider) -> None:
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
                task = asyncio.create_task(self._handle(msg, provider))
                task.add_done_callback(lambda _t: self._slots.release())

    async def _on_cancel(self, msg: Msg) -> None:
        job_id = bus.job_id_from_subject(msg.subject)
        inflight = self._inflight.get(job_id)
        if inflight is not None and not inflight.task.done():
            log.info("cancelling_job", job_id=job_id)
            inflight.cancel_reason = "client"
            inflight.task.cancel()

    async def _is_cancelled(self, job_id: str) -> bool:
        assert self._cancelled is not None
        try:
            await self._cancelled.get(job_id)
        except Exception:  # KeyNotFoundError, or the bucket briefly unreachable
            return False
        return True

    # -- running one job ---------------------------------------------------------

    async def _handle(self, msg: Msg, provider: Provider) -> None:
        assert self._js is not None
        try:
            job = bus.JobMessage.decode(msg.subject, msg.headers, msg.data)
            request = pb.DubRequest.FromString(job.request)
        except Exception as exc:
            # Nobody can ever run this message; report if we can name the job.
            log.error("invalid_job_message", subject=msg.subject, error=repr(exc))
            job_id = (msg.headers or {}).get(bus.HEADER_JOB_ID)
            if job_id:
                await EventPublisher(
                    self._js,
                    job_id=job_id,
                    attempt=msg.metadata.num_delivered,
                    worker_id=self.worker_id,
                ).emit(
                    bus.EventType.FAILED,
                    error=bus.ErrorDetail("INTERNAL", Reason.INVALID_JOB_MESSAGE, str(exc)),
                )
            await msg.term()
            return

        delivered = msg.metadata.num_delivered
        attempt = job.attempt_base + delivered
        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, request_id=request.request_id, attempt=attempt
        )
        if self._stopping.is_set():
            await msg.nak()
            return
        if await self._is_cancelled(job.job_id):
            log.info("skipping_cancelled_job")
            await msg.ack()
            return

        publisher = EventPublisher(
            self._js, job_id=job.job_id, attempt=attempt, worker_id=self.worker_id
        )
        current = asyncio.current_task()
        assert current is not None
        inflight = _InFlight(task=current)
        self._inflight[job.job_id] = inflight
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        log.info("job_started", provider=job.provider, delivered=delivered)
        try:
            await publisher.emit(bus.EventType.STARTED, stage="synthesizing", progress=0.0)
            await self._run(job, request, provider, publisher, attempt)
            await msg.ack_sync()
            log.info("job_finished", outcome="succeeded")
        except asyncio.CancelledError:
            heartbeat.cancel()
            if inflight.cancel_reason == "client":
                await publisher.emit(bus.EventType.CANCELLED, stage="cancelled")
                await msg.ack()
                log.info("job_finished", outcome="cancelled")
                return  # the cancellation was ours to handle; nothing above waits on it
            await publisher.emit(bus.EventType.RETRYING, stage="retrying")
            await msg.nak()
            log.info("job_finished", outcome="handed_back")
            raise
        except (PermanentProviderError, BackgroundRejected) as exc:
            await self._fail(msg, publisher, "INVALID_ARGUMENT", exc.reason, exc.message)
        except TransientProviderError as exc:
            await self._retry_or_fail(msg, publisher, exc.reason, exc.message, exc.retry_after)
        except BackgroundUnavailable as exc:
            await self._retry_or_fail(msg, publisher, exc.reason, exc.message, None)
        except Exception as exc:
            log.exception("job_error")
            await self._retry_or_fail(msg, publisher, Reason.INTERNAL, repr(exc), None)
        finally:
            heartbeat.cancel()
            self._inflight.pop(job.job_id, None)
            structlog.contextvars.unbind_contextvars("job_id", "request_id", "attempt")

    async def _run(
        self,
        job: bus.JobMessage,
        request: pb.DubRequest,
        provider: Provider,
        publisher: EventPublisher,
        attempt: int,
    ) -> None:
        assert self._results is not None
        # Everything the job writes (dub track, background, encoded result) lives here
        # and goes when the attempt ends, however it ends.
        with tempfile.TemporaryDirectory(
            prefix=f"dubbing-{job.job_id}-", dir=self.settings.work_dir or None
        ) as tmp:
            out = await dub_transcript(
                request, provider, publisher.progress, Path(tmp), fetcher=self._fetcher
            )
            await publisher.emit(bus.EventType.PROGRESS, stage="uploading", progress=0.9)
            stored = await artifacts.put(
                self._results, bus.result_object_name(job.job_id, attempt), out.path
            )
        await publisher.emit(
            bus.EventType.SUCCEEDED,
            stage="done",
            progress=1.0,
            result=bus.ResultInfo(
                artifact=stored.name,
                format=out.format,
                sample_rate_hz=out.sample_rate_hz,
                duration_seconds=out.duration_seconds,
                size_bytes=stored.size,
                sha256=stored.sha256,
                timing=out.timing,
                loudness_lufs=out.loudness_lufs,
                channels=out.channels,
            ),
            generated_audio_seconds=out.generated_audio_seconds,
            characters=out.characters,
        )

    async def _fail(
        self, msg: Msg, publisher: EventPublisher, code: str, reason: str, message: str
    ) -> None:
        await publisher.emit(
            bus.EventType.FAILED, stage="failed", error=bus.ErrorDetail(code, reason, message)
        )
        await msg.term()
        log.info("job_finished", outcome="failed", reason=reason)

    async def _retry_or_fail(
        self,
        msg: Msg,
        publisher: EventPublisher,
        reason: str,
        message: str,
        retry_after: float | None,
    ) -> None:
        delivered = msg.metadata.num_delivered
        if delivered >= self.settings.max_deliver:
            await self._fail(
                msg,
                publisher,
                "UNAVAILABLE",
                reason,
                f"gave up after {delivered} attempts: {message}",
            )
            return
        s = self.settings
        delay = retry_after or min(s.retry_max_seconds, s.retry_base_seconds * 2 ** (delivered - 1))
        await publisher.emit(
            bus.EventType.RETRYING,
            stage="retrying",
            error=bus.ErrorDetail("UNAVAILABLE", reason, message),
        )
        await msg.nak(delay=delay)
        log.info("job_finished", outcome="retrying", reason=reason, delay=delay)

    async def _heartbeat(self, msg: Msg) -> None:
        interval = self.settings.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except Exception as exc:  # disconnected: the next tick tries again
                log.warning("heartbeat_failed", error=repr(exc))

    # -- advertising -------------------------------------------------------------

    def _adverts(self) -> list[bus.WorkerAdvert]:
        out = []
        for name, provider in self.providers.items():
            caps = provider.capabilities
            out.append(
                bus.WorkerAdvert(
                    worker_id=self.worker_id,
                    provider=name,
                    transcript_dubbing=caps.transcript_dubbing,
                    media_dubbing=caps.media_dubbing,
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
