"""Delivering one job message to its handler: decode, claim, lease, report, retry or fail.

The contract (see ``dubbing.bus`` and ``dubbing.jobstate``):

* Each message is one attempt, numbered by the gateway. A run claims it by
  storing its STARTED event (with a fresh ``run_id``) and then acks it at once.
  From then on the run lives on its lease, which ``worker.leases.LeaseKeeper``
  renews; nothing the run does later touches the message, so a late ack or nak
  from a stalled worker can never remove the message of a live attempt.
* The handler's error type alone decides what happens (``worker.providers.errors``,
  ``worker.background``): a transient one is reported RETRYING with its backoff
  (the gateway dispatches the next attempt) or, at the job's last attempt,
  FAILED; a permanent one FAILED with the code it carries.
* A message not yet claimed when the worker stops, or whose claim could not be
  stored, is nak'ed: the bus redelivers it as the same attempt.
* A stop notice stops a run: the client cancelled (every run; reported
  CANCELLED), or the gateway says the run lost its attempt (that run only; it
  stops without reporting, since nothing it says would count). At shutdown, runs
  still going after the grace period are handed back (RETRYING, no backoff).
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from dubbing import artifacts, bus
from dubbing.errors import Code, Reason
from dubbing.logging import get_logger
from dubbing.settings import WorkerSettings
from dubbing.v1 import dubbing_pb2 as pb
from worker.background import BackgroundRejected, BackgroundUnavailable
from worker.events import EventPublisher
from worker.handlers import JobHandler
from worker.leases import LeaseKeeper
from worker.providers import PermanentProviderError, TransientProviderError

log = get_logger(__name__)


class RequestGone(Exception):
    """The requests bucket no longer holds the job's request (kept 7 days per dispatch)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the job's request ({name}) is no longer stored")


class Stop(enum.StrEnum):
    """Why a run's task is being cancelled."""

    CLIENT = "client"  # CancelJob
    SUPERSEDED = "superseded"  # the gateway gave its attempt to another run
    SHUTDOWN = "shutdown"  # SIGTERM, past the grace period


@dataclass
class _InFlight:
    task: asyncio.Task[None]
    job_id: str
    run_id: str
    stop: Stop | None = None


class Delivery:
    """Runs the messages a worker fetched; knows which runs are in flight."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        settings: WorkerSettings,
        worker_id: str,
        requests: ObjectStore,
        cancelled: KeyValue,
        leases: LeaseKeeper,
    ) -> None:
        self._js = js
        self._settings = settings
        self._worker_id = worker_id
        self._requests = requests
        self._cancelled = cancelled
        self._leases = leases
        self._stopping = False
        # By run id: a worker may hold two runs of one job (a message delivered twice).
        self._inflight: dict[str, _InFlight] = {}

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- stopping runs -------------------------------------------------------------

    def stop(self, job_id: str, notice: bus.StopNotice) -> None:
        """Stop the runs of `job_id` that `notice` names (all of them for a client's cancel)."""
        for inflight in list(self._inflight.values()):
            if inflight.job_id != job_id or inflight.task.done():
                continue
            if notice.run_id and notice.run_id != inflight.run_id:
                continue
            why = Stop.SUPERSEDED if notice.run_id else Stop.CLIENT
            log.info("stopping_run", job_id=job_id, run_id=inflight.run_id, why=why.value)
            inflight.stop = why
            inflight.task.cancel()

    async def drain(self, grace_seconds: float) -> None:
        """Refuse new messages, give runs `grace_seconds`, hand back the rest."""
        self._stopping = True
        tasks = [f.task for f in self._inflight.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for inflight in list(self._inflight.values()):
            if inflight.task in pending:
                log.info("handing_back_job", job_id=inflight.job_id, run_id=inflight.run_id)
                inflight.stop = Stop.SHUTDOWN
                inflight.task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one message -----------------------------------------------------------------

    async def handle(self, msg: Msg, handler: JobHandler) -> None:
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
            gone = RequestGone(job.request_object)
            await self._reject(msg, run_id, gone, Reason.REQUEST_NOT_STORED)
            return
        except (nats.errors.Error, artifacts.IncompleteObject) as exc:  # redelivered later
            log.warning("request_load_failed", job_id=job.job_id, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        except Exception as exc:
            await self._reject(msg, run_id, exc)
            return

        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, request_id=request.request_id, attempt=job.attempt, run_id=run_id
        )
        try:
            if self._stopping:
                await msg.nak()
                return
            if await self._is_cancelled(job.job_id):
                log.info("skipping_cancelled_job")
                await msg.ack()
                return
            publisher = EventPublisher(
                self._js,
                job_id=job.job_id,
                attempt=job.attempt,
                run_id=run_id,
                worker_id=self._worker_id,
            )
            current = asyncio.current_task()
            assert current is not None
            inflight = self._inflight[run_id] = _InFlight(current, job.job_id, run_id)
            try:
                await self._attempt(msg, job, request, handler, publisher, inflight)
            finally:
                self._inflight.pop(run_id, None)
                self._leases.discard(run_id)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "request_id", "attempt", "run_id")

    async def _is_cancelled(self, job_id: str) -> bool:
        try:
            await self._cancelled.get(job_id)
        except Exception:  # KeyNotFoundError, or the bucket briefly unreachable
            return False
        return True

    async def _request_bytes(self, job: bus.JobMessage) -> bytes:
        """The serialized request: in the message, or in the requests bucket when it
        was too large for one (a short read is retried: see IncompleteObject)."""
        if not job.request_object:
            return job.request
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
                worker_id=self._worker_id,
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
        handler: JobHandler,
        publisher: EventPublisher,
        inflight: _InFlight,
    ) -> None:
        """Claim the message, run the job, report how it ended."""
        claimed = False
        run = bus.RunRef(job.job_id, job.attempt, inflight.run_id)
        try:
            await publisher.emit(bus.EventType.STARTED, stage="synthesizing", progress=0.0)
            claimed = True
            self._leases.add(run)
            await self._ack(msg)
            log.info(
                "job_started",
                provider=job.provider,
                delivered=msg.metadata.num_delivered,
                request_bytes=request.ByteSize(),
                by_reference=bool(job.request_object),
            )
            outcome = await handler.run(job, request, run, publisher.progress)
            await publisher.emit(
                bus.EventType.SUCCEEDED,
                stage="done",
                progress=1.0,
                result=outcome.result,
                generated_audio_seconds=outcome.generated_audio_seconds,
                characters=outcome.characters,
            )
            log.info("job_finished", outcome="succeeded")
        except asyncio.CancelledError:
            if inflight.stop is Stop.CLIENT:
                if claimed:
                    await publisher.emit(bus.EventType.CANCELLED, stage="cancelled")
                else:
                    await msg.ack()  # the job is cancelled: nobody needs this message
                log.info("job_finished", outcome="cancelled")
                return  # the cancellation was ours to handle; nothing above waits on it
            if inflight.stop is Stop.SUPERSEDED:
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
            max_attempts = job.max_attempts or self._settings.max_deliver
            await self._report_failure(publisher, exc, max_attempts)

    async def _ack(self, msg: Msg) -> None:
        """Ack a claimed message, confirmed by the server. A lost ack costs at most a
        second run of this attempt, which the gateway fences off and stops."""
        try:
            await msg.ack_sync(timeout=max(1.0, self._settings.ack_wait_seconds / 3))
        except Exception as exc:
            log.warning("claim_ack_failed", error=repr(exc))

    async def _report_failure(
        self, publisher: EventPublisher, exc: Exception, max_attempts: int
    ) -> None:
        """Retry versus failure, from the error's type alone."""
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
        s = self._settings
        delay = retry_after or min(s.retry_max_seconds, s.retry_base_seconds * 2 ** (attempt - 1))
        await publisher.emit(
            bus.EventType.RETRYING,
            stage="retrying",
            error=bus.ErrorDetail(Code.UNAVAILABLE, reason, message),
            retry_after=delay,
        )
        log.info("job_finished", outcome="retrying", reason=reason, delay=delay)
