"""The DubbingService RPCs: validation, admission and reads over the job store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from nats.aio.client import Client as NATS
from nats.js.errors import ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from dubbing import artifacts, bus, jobstate
from dubbing.conventions import GENDER_BY_NAME, NAME_BY_GENDER, match_language
from dubbing.errors import Reason
from dubbing.jetstream import BusUnavailable
from dubbing.logging import get_logger
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from gateway import assets, pagination, rpc_errors, transcript_files
from gateway.registry import WorkerRegistry
from gateway.store import (
    Cursor,
    JobNotFound,
    JobStore,
    RequestIdReused,
    StoreUnavailable,
    new_job_id,
)
from gateway.validation import (
    Limits,
    job_id_problem,
    request_hash,
    validate_list_request,
    validate_submit_request,
)
from gateway.watch import WatchHub

log = get_logger(__name__)

DEFAULT_PROVIDER = "local"
DOWNLOAD_CHUNK_BYTES = 64 * 1024

T = TypeVar("T")
Handler = Callable[..., Awaitable[T]]


@contextlib.asynccontextmanager
async def _rpc_scope(
    name: str,
    context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
) -> AsyncIterator[None]:
    """Log context for one RPC, and the error contract every RPC keeps (AIP-193):
    infrastructure trouble is UNAVAILABLE, anything unexpected INTERNAL, both with
    an ErrorInfo; errors the handler already chose pass through."""
    structlog.contextvars.bind_contextvars(rpc=name)
    try:
        yield
    except StoreUnavailable as exc:
        log.warning("database_unavailable", error=str(exc))
        await rpc_errors.abort(
            context, grpc.StatusCode.UNAVAILABLE, Reason.DATABASE_UNAVAILABLE, str(exc)
        )
    except BusUnavailable as exc:
        log.warning("bus_unavailable", error=str(exc))
        await rpc_errors.abort(
            context, grpc.StatusCode.UNAVAILABLE, Reason.BUS_UNAVAILABLE, str(exc)
        )
    except (grpc.aio.AbortError, grpc.aio.BaseError):
        raise
    except Exception as exc:
        log.exception("rpc_failed")
        await rpc_errors.abort(
            context, grpc.StatusCode.INTERNAL, Reason.INTERNAL, f"internal error: {exc!r}"
        )
    finally:
        structlog.contextvars.unbind_contextvars("rpc", "job_id", "request_id")


def _unary(fn: Handler[T]) -> Handler[T]:
    @functools.wraps(fn)
    async def wrapper(
        self: DubbingServicer,
        request: Any,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> T:
        async with _rpc_scope(fn.__name__, context):
            return await fn(self, request, context)
        raise AssertionError("unreachable: _rpc_scope re-raises or aborts")

    return wrapper


S = TypeVar("S")


def _streaming(
    fn: Callable[..., AsyncIterator[S]],
) -> Callable[..., AsyncIterator[S]]:
    @functools.wraps(fn)
    async def wrapper(
        self: DubbingServicer,
        request: Any,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[S]:
        async with _rpc_scope(fn.__name__, context):
            async for item in fn(self, request, context):
                yield item

    return wrapper


class DubbingServicer(pb_grpc.DubbingServiceServicer):
    def __init__(
        self,
        *,
        store: JobStore,
        hub: WatchHub,
        registry: WorkerRegistry,
        nc: NATS,
        cancelled: KeyValue,
        results: ObjectStore,
        assets: assets.AssetStore,
        limits: Limits,
        page_tokens: pagination.PageTokenCodec,
        watch_poll_seconds: float,
    ) -> None:
        self._store = store
        self._hub = hub
        self._registry = registry
        self._nc = nc
        self._cancelled = cancelled
        self._results = results
        self._assets = assets
        self._limits = limits
        self._page_tokens = page_tokens
        self._watch_poll_seconds = watch_poll_seconds
        self._closing = asyncio.Event()

    def begin_shutdown(self) -> None:
        """End open watches with UNAVAILABLE so clients resume on another replica."""
        self._closing.set()

    # -- SubmitDub ---------------------------------------------------------------

    @_unary
    async def SubmitDub(
        self,
        request: pb.SubmitDubRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.SubmitDubResponse:
        sent = request.request
        structlog.contextvars.bind_contextvars(request_id=sent.request_id)
        try:
            req, warnings = transcript_files.expand(sent)
        except transcript_files.UnreadableFile as exc:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_ARGUMENT,
                f"invalid request: {exc.field}: {exc.description}",
                field_violations=[(exc.field, exc.description)],
            )
        # Fields of a newer client's that this version does not know are neither
        # counted against the size limit nor stored (nor sent to the worker).
        known = pb.DubRequest()
        known.CopyFrom(req)
        known.DiscardUnknownFields()
        req = known
        request = pb.SubmitDubRequest(request=req)
        violations = validate_submit_request(request, self._limits)
        if violations:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_ARGUMENT,
                f"invalid request: {violations[0][0]}: {violations[0][1]}",
                field_violations=violations,
            )
        provider = req.provider or DEFAULT_PROVIDER
        kind = jobstate.job_kind(req)
        gender = req.transcript.voice.gender if kind is bus.JobKind.TRANSCRIPT else 0
        background = req.transcript.background
        if kind is bus.JobKind.TRANSCRIPT and background.WhichOneof("source") == "asset":
            await self._check_asset(context, background.asset)
        await self._admit(context, provider, kind, req.target_language, gender)

        stored_request = pb.DubRequest()
        stored_request.CopyFrom(req)
        stored_request.provider = provider
        job = jobstate.new_job(new_job_id(), stored_request, time.time())
        message = jobstate.job_message(job, 1, self._store.policy)
        try:
            # Judged on the request as sent: a retry re-sends the same file.
            job, created = await self._store.submit(
                job, request_hash=request_hash(sent), message=message
            )
        except RequestIdReused as exc:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.REQUEST_ID_REUSED,
                f"request_id {req.request_id!r} was used for job {exc.existing_job_id} "
                "with different parameters",
                metadata={"job_id": exc.existing_job_id},
                field_violations=[("request.request_id", "already used with different parameters")],
            )
        structlog.contextvars.bind_contextvars(job_id=job.id)
        if created:  # the store's commit has woken the outbox relay
            log.info("job_accepted", provider=provider, kind=kind.value)
        return pb.SubmitDubResponse(job=job, created=created, warnings=warnings)

    async def _admit(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        provider: str,
        kind: bus.JobKind,
        language: str,
        gender: int,
    ) -> None:
        """FAILED_PRECONDITION unless a live worker can run this kind/provider/language."""
        adverts = await self._registry.serving(provider)
        meta = {"provider": provider, "target_language": language}
        if kind is bus.JobKind.MEDIA and not any(a.media_dubbing for a in adverts):
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.MEDIA_DUBBING_UNAVAILABLE,
                f"no live worker serves media dubbing with provider {provider!r}",
                metadata=meta,
            )
        if not any(a.transcript_dubbing or a.media_dubbing for a in adverts):
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.PROVIDER_UNAVAILABLE,
                f"no live worker serves provider {provider!r}; see ListLanguages",
                metadata=meta,
            )
        spoken = [lang for a in adverts if (lang := _language(a, language)) is not None]
        if not spoken:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.LANGUAGE_UNAVAILABLE,
                f"provider {provider!r} has no live worker for language {language!r}; "
                "see ListLanguages",
                metadata=meta,
            )
        wanted = NAME_BY_GENDER.get(gender)
        if wanted is not None and not any(wanted in lang.genders for lang in spoken):
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.GENDER_UNAVAILABLE,
                f"provider {provider!r} has no {wanted} voice for language {language!r}",
                metadata={**meta, "gender": wanted},
            )

    async def _check_asset(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        name: str,
    ) -> None:
        """INVALID_ARGUMENT unless the asset is stored; UNAVAILABLE if NATS cannot tell."""
        if not await self._assets.exists(name):
            await rpc_errors.abort_invalid_argument(
                context,
                [
                    (
                        "request.transcript.background.asset",
                        f"asset {name!r} does not exist or has expired; upload it with UploadAsset",
                    )
                ],
                reason=Reason.ASSET_NOT_FOUND,
                message=f"asset {name!r} not found",
                metadata={"asset": name},
            )

    # -- UploadAsset -------------------------------------------------------------

    @_unary
    async def UploadAsset(
        self,
        request_iterator: AsyncIterator[pb.UploadAssetRequest],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.UploadAssetResponse:
        started = time.monotonic()
        try:
            # Unlinked at creation: nothing is left behind on any path, a crash included.
            with tempfile.TemporaryFile(prefix="dubbing-asset-") as spool:
                received = await assets.receive(
                    request_iterator, spool, max_bytes=self._assets.max_bytes
                )
                asset = await self._assets.put(spool, received)
        except assets.UploadRejected as exc:
            log.info(
                "asset_upload_rejected",
                reason=exc.reason.value,
                field=exc.field,
                description=exc.description,
                seconds=round(time.monotonic() - started, 3),
            )
            await rpc_errors.abort_invalid_argument(
                context, [(exc.field, exc.description)], reason=exc.reason, metadata=exc.metadata
            )
        except asyncio.CancelledError:
            log.info("asset_upload_cancelled", seconds=round(time.monotonic() - started, 3))
            raise
        log.info(
            "asset_uploaded",
            asset=asset.name,
            filename=asset.filename,
            size_bytes=asset.size_bytes,
            sha256=asset.sha256,
            seconds=round(time.monotonic() - started, 3),
        )
        return pb.UploadAssetResponse(asset=asset)

    # -- reads -------------------------------------------------------------------

    async def _load(self, context: grpc.aio.ServicerContext, job_id: str) -> pb.Job:  # type: ignore[type-arg]
        if (problem := job_id_problem(job_id)) is not None:
            await rpc_errors.abort_invalid_argument(context, [("job_id", problem)])
        structlog.contextvars.bind_contextvars(job_id=job_id)
        job = await self._store.get(job_id)
        if job is None:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                Reason.JOB_NOT_FOUND,
                f"job {job_id!r} not found",
                metadata={"job_id": job_id},
            )
        assert job is not None
        return job

    @_unary
    async def GetJob(
        self,
        request: pb.GetJobRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=await self._load(context, request.job_id))

    @_unary
    async def ListJobs(
        self,
        request: pb.ListJobsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.ListJobsResponse:
        violations = validate_list_request(request)
        if violations:
            await rpc_errors.abort_invalid_argument(context, violations)
        try:
            size = pagination.page_size(request.page_size)
            states = sorted(set(request.states))
            filter_key = pagination.states_filter_key(states)
            after = (
                Cursor(*self._page_tokens.decode(request.page_token, filter_key))
                if request.page_token
                else None
            )
        except pagination.InvalidPageRequest as exc:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                exc.reason,
                str(exc),
                field_violations=exc.violations,
            )
        jobs = await self._store.list_jobs(states=states, limit=size + 1, after=after)
        if request.view != pb.JOB_VIEW_FULL:
            for job in jobs:
                _basic_view(job)
        page = pagination.fill_page(jobs, size)
        token = ""
        if len(page) < len(jobs):
            following = Cursor.after(page[-1])
            token = self._page_tokens.encode(
                (following.create_time_ns, following.job_id), filter_key
            )
        return pb.ListJobsResponse(jobs=page, next_page_token=token)

    # -- CancelJob ---------------------------------------------------------------

    @_unary
    async def CancelJob(
        self,
        request: pb.CancelJobRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.CancelJobResponse:
        await self._load(context, request.job_id)
        try:
            job = await self._store.cancel(request.job_id, time.time())
        except JobNotFound:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                Reason.JOB_NOT_FOUND,
                f"job {request.job_id!r} not found",
                metadata={"job_id": request.job_id},
            )
        except jobstate.JobAlreadyFinished as exc:
            state = pb.Job.State.Name(exc.job.state)
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.JOB_ALREADY_FINISHED,
                f"job {request.job_id} already ended as {state}",
                metadata={"job_id": request.job_id, "state": state},
            )
        # Tell a worker running it to stop; the KV entry covers a worker that
        # claims the job later or missed the message.
        try:
            await self._cancelled.put(job.id, b"1")
            await self._nc.publish(bus.cancel_subject(job.id), b"")
        except Exception as exc:
            log.warning("cancel_broadcast_failed", error=repr(exc))
        await self._hub.announce(job.id, job.sequence)
        log.info("job_cancelled")
        return pb.CancelJobResponse(job=job)

    # -- WatchJob ----------------------------------------------------------------

    @_streaming
    async def WatchJob(
        self,
        request: pb.WatchJobRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        if request.after_sequence < 0:
            await rpc_errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_ARGUMENT,
                "after_sequence must not be negative",
                field_violations=[("after_sequence", "must not be negative")],
            )
        job = await self._load(context, request.job_id)
        with self._hub.listen(job.id) as changed:
            last = request.after_sequence
            if last == 0:
                yield pb.WatchJobResponse(job=job)
                last = job.sequence
                if jobstate.is_terminal(job):
                    return
            while True:
                changed.clear()
                versions = await self._store.history(job.id, last)
                for version in versions:
                    yield pb.WatchJobResponse(job=version)
                    last = version.sequence
                    if jobstate.is_terminal(version):
                        return
                if not versions:
                    current = await self._store.get(job.id)
                    if current is not None and jobstate.is_terminal(current):
                        if current.sequence <= last:
                            return
                        continue
                    await self._wait_for_change(context, changed)

    async def _wait_for_change(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        changed: asyncio.Event,
    ) -> None:
        waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self._watch_poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
        if self._closing.is_set():
            await rpc_errors.abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                Reason.GATEWAY_SHUTTING_DOWN,
                "the gateway is shutting down; resume the watch with after_sequence",
            )

    # -- ListLanguages -----------------------------------------------------------

    @_unary
    async def ListLanguages(
        self,
        request: pb.ListLanguagesRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.ListLanguagesResponse:
        by_provider: dict[str, list[bus.WorkerAdvert]] = {}
        for advert in self._registry.live():
            if request.provider and advert.provider != request.provider:
                continue
            by_provider.setdefault(advert.provider, []).append(advert)
        out = []
        for provider, adverts in sorted(by_provider.items()):
            languages: dict[str, tuple[str, set[str]]] = {}
            for advert in adverts:
                for lang in advert.languages:
                    _, genders = languages.setdefault(lang.code, (lang.name, set()))
                    genders.update(lang.genders)
            out.append(
                pb.ProviderSupport(
                    provider=provider,
                    transcript_dubbing=any(a.transcript_dubbing for a in adverts),
                    media_dubbing=any(a.media_dubbing for a in adverts),
                    languages=[
                        pb.LanguageSupport(
                            code=code,
                            name=name,
                            genders=sorted(
                                GENDER_BY_NAME[g] for g in genders if g in GENDER_BY_NAME
                            ),
                        )
                        for code, (name, genders) in sorted(languages.items())
                    ],
                    min_speed=min(a.min_speed for a in adverts),
                    max_speed=max(a.max_speed for a in adverts),
                    live_workers=len({a.worker_id for a in adverts}),
                )
            )
        return pb.ListLanguagesResponse(providers=out)

    # -- DownloadResult ----------------------------------------------------------

    @_streaming
    async def DownloadResult(
        self,
        request: pb.DownloadResultRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[pb.DownloadResultResponse]:
        job = await self._load(context, request.job_id)
        if job.state != pb.Job.State.STATE_SUCCEEDED:
            state = pb.Job.State.Name(job.state)
            await rpc_errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.JOB_NOT_SUCCEEDED,
                f"job {job.id} is {state}; only a SUCCEEDED job has a result",
                metadata={"job_id": job.id, "state": state},
            )
        first = True
        try:
            async for data in artifacts.stream(self._results, job.result.artifact):
                for offset in range(0, len(data), DOWNLOAD_CHUNK_BYTES):
                    chunk = data[offset : offset + DOWNLOAD_CHUNK_BYTES]
                    if first:
                        yield pb.DownloadResultResponse(result=job.result, chunk=chunk)
                        first = False
                    else:
                        yield pb.DownloadResultResponse(chunk=chunk)
        except ObjectNotFoundError:
            if not first:
                raise
            log.warning("result_not_found", artifact=job.result.artifact)
            await rpc_errors.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                Reason.RESULT_NOT_FOUND,
                f"the result of job {job.id} is no longer stored",
                metadata={"job_id": job.id},
            )
        except Exception as exc:
            if not first:
                raise
            # A timeout or a NATS reconnect is not "gone": the client should retry.
            log.warning("result_unavailable", error=repr(exc))
            await rpc_errors.abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                Reason.BUS_UNAVAILABLE,
                f"the result of job {job.id} cannot be read right now; retry",
                metadata={"job_id": job.id},
            )
        if first:  # an empty artifact still answers with its metadata
            yield pb.DownloadResultResponse(result=job.result)


def _basic_view(job: pb.Job) -> None:
    """`job` cut to JOB_VIEW_BASIC: no work in its request, no timing report (AIP-157)."""
    job.request.ClearField("work")
    job.result.ClearField("timing")
    if not job.result.ListFields():  # a job without a result keeps none
        job.ClearField("result")


def _language(advert: bus.WorkerAdvert, code: str) -> bus.LanguageAdvert | None:
    """The advertised language for `code` (``conventions.match_language``)."""
    return match_language(code, ((lang.code, lang) for lang in advert.languages))
