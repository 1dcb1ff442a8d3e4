"""The worker process: claims jobs from JetStream, runs them, reports.

Delivery contract (see ``dubbing.bus`` and ``dubbing.jobstate``):

* Pull consumer with explicit acks. Each message is one attempt, numbered by
  the gateway. A worker claims it by storing its STARTED event (with a fresh
  ``run_id``) and then acks it at once. From then on the run lives on its
  lease, which :class:`worker.leases.LeaseKeeper` renews every third of it; a
  worker that dies stops renewing and the gateway dispatches the next attempt.
  Nothing a run does after its claim touches the message, so a late ack or
  nak from a stalled worker can never remove the message of a live attempt.
* Transient failure: a RETRYING event saying how long to back off; the gateway
  dispatches the next attempt after that. At the job's last attempt: FAILED.
* Permanent failure (bad input the gateway could not see, unsupported option):
  FAILED with the provider's reason.
* A message not yet claimed when the worker stops, or whose claim could not be
  stored, is nak'ed: the bus redelivers it as the same attempt.
* A stop notice on the job's cancel subject stops a run: the client cancelled
  (every run; reported CANCELLED), or the gateway says the run lost its attempt
  (that run only; it stops without reporting, since nothing it says would count).
* SIGTERM: stop fetching, give in-flight jobs ``grace_seconds`` to finish, hand
  the rest back (RETRYING, no backoff), withdraw the advert, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from dubbing import artifacts, bus, jetstream
from dubbing.errors import Code, Reason
from dubbing.logging import get_logger
from dubbing.settings import WorkerSettings
from dubbing.v1 import dubbing_pb2 as pb
from worker import providers as providers_mod
from worker.background import BackgroundFetcher, BackgroundRejected, BackgroundUnavailable
from worker.events import EventPublisher
from worker.leases import LeaseKeeper
from worker.providers import PermanentProviderError, Provider, TransientProviderError
from worker.transcript import dub_transcript

log = get_logger(__name__)


class RequestGone(Exception):
    """The requests bucket no longer holds the job's request (kept 7 days per dispatch)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the job's request ({name}) is no longer stored")


class _Stop(enum.StrEnum):
    """Why a run's task is being cancelled."""

    CLIENT = "client"  # CancelJob
    SUPERSEDED = "superseded"  # the gateway gave its attempt to another run
    SHUTDOWN = "shutdown"  # SIGTERM, past the grace period


@dataclass
class _InFlight:
    task: asyncio.Task[None]
    job_id: str
    run_id: str
    stop: _Stop | None = None
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
        # By run id: a worker may hold two runs of one job (a message delivered twice).
        self._inflight: dict[str, _InFlight] = {}
        self._leases: LeaseKeeper | None = None
        self._stopping = asyncio.Event()
        # Set once the worker is claiming jobs and its advert is stored.
        self.ready = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._results: ObjectStore | None = None
        self._requests: ObjectStore | None = None
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
        self._requests = await jetstream.requests_store(js)
        self._fetcher = BackgroundFetcher(await jetstream.assets_store(js))
        self._cancelled = await jetstream.cancelled_kv(js)
        self._workers_kv = await jetstream.workers_kv(js)
        self._leases = leases = LeaseKeeper(
            js, worker_id=self.worker_id, lease_seconds=s.ack_wait_seconds
        )
        renewing = asyncio.create_task(leases.run(), name="lease-keeper")
        cancel_sub = await nc.subscribe(f"{bus.CANCEL_SUBJECT_PREFIX}.*", cb=self._on_cancel)

        loops = []
        for name, provider in self.providers.items():
            kind = bus.JobKind.TRANSCRIPT
            durable = bus.worker_consumer_name(kind, name)
            config = ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                # Only the claim (STARTED stored, then ack) happens under the ack wait.
                ack_wait=s.ack_wait_seconds,
                # Unlimited: attempts are counted by the gateway's database, which
                # a nats-server crash cannot reset; a message is redelivered only
                # when its claim did not complete, and must then be delivered again.
                max_deliver=-1,
                filter_subject=bus.job_subject(kind, name),
            )
            # Creates the consumer, or converges one an older version made.
            await js.add_consumer(bus.JOBS_STREAM, config=config)
            sub = await js.pull_subscribe(
                bus.job_subject(kind, name), durable=durable, stream=bus.JOBS_STREAM
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

    async def _drain_in_flight(self) -> None:
        tasks = [f.task for f in self._inflight.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
        for inflight in list(self._inflight.values()):
            if inflight.task in pending:
                log.info("handing_back_job", job_id=inflight.job_id, run_id=inflight.run_id)
                inflight.stop = _Stop.SHUTDOWN
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
        try:
            notice = bus.StopNotice.decode(msg.data)
        except Exception as exc:
            log.warning("invalid_stop_notice", job_id=job_id, error=repr(exc))
            return
        for inflight in list(self._inflight.values()):
            if inflight.job_id != job_id or inflight.task.done():
                continue
            if notice.run_id and notice.run_id != inflight.run_id:
                continue
            stop = _Stop.SUPERSEDED if notice.run_id else _Stop.CLIENT
            log.info("stopping_run", job_id=job_id, run_id=inflight.run_id, why=stop.value)
            inflight.stop = stop
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
        assert self._js is not None and self._leases is not None
        run_id = uuid.uuid4().hex[:16]
        delivered = msg.metadata.num_delivered
        try:
            job = bus.JobMessage.decode(msg.subject, msg.headers, msg.data, num_delivered=delivered)
        except Exception as exc:
            await self._reject(msg, run_id, exc)
            return
        try:
            request = pb.DubRequest.FromString(await self._request_bytes(job))
        except ObjectNotFoundError:
            await self._reject(
                msg, run_id, RequestGone(job.request_object), Reason.REQUEST_NOT_STORED
            )
            return
        except (nats.errors.Error, artifacts.IncompleteObject) as exc:  # redelivered later
            log.warning("request_load_failed", job_id=job.job_id, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        except Exception as exc:
            await self._reject(msg, run_id, exc)
            return

        attempt = job.attempt
        max_attempts = job.max_attempts or self.settings.max_deliver
        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, request_id=request.request_id, attempt=attempt, run_id=run_id
        )
        try:
            if self._stopping.is_set():
                await msg.nak()
                return
            if await self._is_cancelled(job.job_id):
                log.info("skipping_cancelled_job")
                await msg.ack()
                return
            publisher = EventPublisher(
                self._js,
                job_id=job.job_id,
                attempt=attempt,
                run_id=run_id,
                worker_id=self.worker_id,
            )
            current = asyncio.current_task()
            assert current is not None
            inflight = self._inflight[run_id] = _InFlight(current, job.job_id, run_id)
            try:
                await self._attempt(msg, job, request, provider, publisher, inflight, max_attempts)
            finally:
                self._inflight.pop(run_id, None)
                self._leases.discard(run_id)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "request_id", "attempt", "run_id")

    async def _request_bytes(self, job: bus.JobMessage) -> bytes:
        """The serialized request: in the message, or in the requests bucket when it
        was too large for one (a short read is retried: see IncompleteObject)."""
        if not job.request_object:
            return job.request
        assert self._requests is not None
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(artifacts.IncompleteObject),
            stop=stop_after_attempt(3),
            reraise=True,
        ):
            with attempt:
                return await artifacts.read(self._requests, job.request_object)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _reject(
        self, msg: Msg, run_id: str, exc: Exception, reason: Reason = Reason.INVALID_JOB_MESSAGE
    ) -> None:
        """A message nobody can ever run: fail its job if it names one, and drop it."""
        assert self._js is not None
        log.error("invalid_job_message", subject=msg.subject, error=repr(exc))
        headers = msg.headers or {}
        job_id = headers.get(bus.HEADER_JOB_ID)
        if job_id:
            attempt = headers.get(bus.HEADER_ATTEMPT, "")
            await EventPublisher(
                self._js,
                job_id=job_id,
                attempt=int(attempt) if attempt.isdigit() else msg.metadata.num_delivered,
                run_id=run_id,
                worker_id=self.worker_id,
            ).emit(
                bus.EventType.FAILED,
                error=bus.ErrorDetail(Code.INTERNAL, reason, str(exc)),
            )
        await msg.term()

    async def _attempt(
        self,
        msg: Msg,
        job: bus.JobMessage,
        request: pb.DubRequest,
        provider: Provider,
        publisher: EventPublisher,
        inflight: _InFlight,
        max_attempts: int,
    ) -> None:
        """Claim the message, run the job, report how it ended."""
        assert self._leases is not None
        claimed = False
        try:
            await publisher.emit(bus.EventType.STARTED, stage="synthesizing", progress=0.0)
            claimed = True
            self._leases.add(bus.RunRef(job.job_id, job.attempt, inflight.run_id))
            await self._ack(msg)
            log.info(
                "job_started",
                provider=job.provider,
                delivered=msg.metadata.num_delivered,
                request_bytes=request.ByteSize(),
                by_reference=bool(job.request_object),
            )
            await self._run(job, request, provider, publisher)
            log.info("job_finished", outcome="succeeded")
        except asyncio.CancelledError:
            if inflight.stop is _Stop.CLIENT:
                if claimed:
                    await publisher.emit(bus.EventType.CANCELLED, stage="cancelled")
                else:
                    await msg.ack()  # the job is cancelled: nobody needs this message
                log.info("job_finished", outcome="cancelled")
                return  # the cancellation was ours to handle; nothing above waits on it
            if inflight.stop is _Stop.SUPERSEDED:
                log.info("job_finished", outcome="superseded")
                return
            if claimed:
                await publisher.emit(bus.EventType.RETRYING, stage="retrying")
            else:
                await msg.nak()
            log.info("job_finished", outcome="handed_back")
            raise
        except Exception as exc:
            if not claimed:
                # The claim could not be stored (NATS away for longer than the
                # publisher retries): the message is still the bus's to redeliver.
                log.warning("claim_failed", error=repr(exc))
                await msg.nak(delay=1.0)
                return
            await self._report_failure(publisher, exc, max_attempts)

    async def _ack(self, msg: Msg) -> None:
        """Ack a claimed message, confirmed by the server. A lost ack costs at most a
        second run of this attempt, which the gateway fences off and stops."""
        try:
            await msg.ack_sync(timeout=max(1.0, self.settings.ack_wait_seconds / 3))
        except Exception as exc:
            log.warning("claim_ack_failed", error=repr(exc))

    async def _report_failure(
        self, publisher: EventPublisher, exc: Exception, max_attempts: int
    ) -> None:
        if isinstance(exc, PermanentProviderError):
            await self._fail(publisher, exc.code, exc.reason, exc.message)
        elif isinstance(exc, BackgroundRejected):
            await self._fail(publisher, Code.INVALID_ARGUMENT, exc.reason, exc.message)
        elif isinstance(exc, TransientProviderError):
            await self._retry_or_fail(
                publisher, exc.reason, exc.message, exc.retry_after, max_attempts
            )
        elif isinstance(exc, BackgroundUnavailable):
            await self._retry_or_fail(publisher, exc.reason, exc.message, None, max_attempts)
        else:
            log.error("job_error", exc_info=exc)
            await self._retry_or_fail(publisher, Reason.INTERNAL, repr(exc), None, max_attempts)

    async def _run(
        self,
        job: bus.JobMessage,
        request: pb.DubRequest,
        provider: Provider,
        publisher: EventPublisher,
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
            name = bus.result_object_name(job.job_id, job.attempt, publisher.run_id)
            stored = await artifacts.put(self._results, name, out.path)
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

    async def _fail(self, publisher: EventPublisher, code: Code, reason: str, message: str) -> None:
        await publisher.emit(
            bus.EventType.FAILED, stage="failed", error=bus.ErrorDetail(code, reason, message)
        )
        log.info("job_finished", outcome="failed", reason=reason)

    async def _retry_or_fail(
        self,
        publisher: EventPublisher,
        reason: str,
        message: str,
        retry_after: float | None,
        max_attempts: int,
    ) -> None:
        attempt = publisher.attempt
        if attempt >= max_attempts:
            await self._fail(
                publisher, Code.UNAVAILABLE, reason, f"gave up after {attempt} attempts: {message}"
            )
            return
        s = self.settings
        delay = retry_after or min(s.retry_max_seconds, s.retry_base_seconds * 2 ** (attempt - 1))
        await publisher.emit(
            bus.EventType.RETRYING,
            stage="retrying",
            error=bus.ErrorDetail(Code.UNAVAILABLE, reason, message),
            retry_after=delay,
        )
        log.info("job_finished", outcome="retrying", reason=reason, delay=delay)

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
