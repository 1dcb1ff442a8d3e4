"""The asynchronous client of ``dubbing.v1.DubbingService``."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import os
import random
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, TypeVar

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from dubbing.errors import Reason
from dubbing.jobstate import is_terminal
from dubbing.settings import ClientSettings
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc

from ._assets import AssetSource, sha256_of, upload_messages
from ._errors import (
    DeadlineExceeded,
    DubbingError,
    FailedPrecondition,
    IntegrityError,
    Unavailable,
    job_error,
)

_T = TypeVar("_T")

_RETRY_READS: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
# A submit carries a request_id, so a retry after a lost answer cannot create a second job.
_RETRY_SUBMIT: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)

_CHANNEL_OPTIONS = [
    ("grpc.primary_user_agent", "dubbing-client/0.1"),
    # After a lost connection, RPCs fail fast while the channel waits to reconnect; cap
    # that wait (default up to 120 s) so a restarted gateway is found again quickly.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries calls that failed with UNAVAILABLE (AIP-194).

    Sleeps use full jitter: before retry ``n`` (1-based) the client sleeps a random
    time in ``[0, min(max_backoff, initial_backoff * 2**(n-1))]``.

    Attributes:
        max_attempts: attempts of a unary call (the first one included).
        initial_backoff: the first backoff window, seconds.
        max_backoff: the largest backoff window, seconds.
        reconnect_timeout: how long the streams (:meth:`DubbingClient.watch`,
            ``download``) keep reconnecting after UNAVAILABLE before giving up, counted
            from the first failure since the stream last delivered something new; long
            enough to ride out a gateway restart.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    reconnect_timeout: float = 60.0

    def backoff(self, failures: int) -> float:
        """The sleep before the retry that follows ``failures`` consecutive failures."""
        high = min(self.max_backoff, self.initial_backoff * 2 ** max(0, failures - 1))
        return random.uniform(0.0, high)


class _Reconnects:
    """Consecutive failures of a stream and the sleeps between its reconnections."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._failures = 0
        self._since: float | None = None

    def progressed(self) -> None:
        self._failures = 0
        self._since = None

    async def pause(self, error: DubbingError) -> None:
        """Sleep before the next reconnection, or raise ``error`` once the time is up."""
        now = asyncio.get_running_loop().time()
        if self._since is None:
            self._since = now
        self._failures += 1
        remaining = self._policy.reconnect_timeout - (now - self._since)
        if remaining <= 0:
            raise error from None
        await asyncio.sleep(min(remaining, self._policy.backoff(self._failures)))


def _is_retryable(codes: Collection[grpc.StatusCode]) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in codes

    return check


class DubbingClient:
    """An asyncio client of the dubbing gateway.

    Use it as an async context manager (or call :meth:`close`), inside a running event
    loop::

        async with DubbingClient("127.0.0.1:50051") as client:
            job = await client.submit(request)
            job = await client.wait(job.id, raise_on_failure=True)
            await client.download(job.id, "out.wav")

    Every method raises a :class:`~dubbing.client.DubbingError` subclass, never a raw
    ``grpc.aio.AioRpcError``. Unary calls are retried on UNAVAILABLE (and ``submit``
    also on DEADLINE_EXCEEDED) according to ``retry``; ``timeout`` bounds each attempt
    of a unary call, not the streams (``watch``, ``download``).

    Args:
        target: ``host:port`` of the gateway; default ``DUBBING_GATEWAY`` or
            ``127.0.0.1:50051``. Ignored for connecting when ``channel`` is given.
        timeout: seconds per attempt of a unary call.
        channel: an existing ``grpc.aio.Channel`` to use; the client does not close it.
        retry: the retry policy.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = 30.0,
        channel: grpc.aio.Channel | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.target: str = target or ClientSettings().gateway
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        if channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
            self._owns_channel = True
        else:
            self._channel = channel
            self._owns_channel = False
        self._stub = pb_grpc.DubbingServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel if the client created it."""
        if self._owns_channel:
            await self._channel.close(None)

    # -- plumbing ------------------------------------------------------------------

    async def _unary(
        self,
        call: Callable[[], Awaitable[_T]],
        *,
        retry_on: Collection[grpc.StatusCode] = _RETRY_READS,
    ) -> _T:
        """``call()`` with retries on ``retry_on``, errors converted to DubbingError."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, self.retry.max_attempts)),
            wait=wait_random_exponential(
                multiplier=self.retry.initial_backoff, max=self.retry.max_backoff
            ),
            retry=retry_if_exception(_is_retryable(retry_on)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except grpc.aio.AioRpcError as exc:
            raise DubbingError.from_rpc_error(exc) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    # -- jobs ------------------------------------------------------------------------

    async def submit(self, request: pb.DubRequest) -> pb.Job:
        """Submit a job and return it (QUEUED, or the existing job for a known request_id).

        An empty ``request_id`` is set to a new UUID (on a copy; ``request`` is not
        modified; the job's ``request.request_id`` shows it) so that the retries on
        UNAVAILABLE and DEADLINE_EXCEEDED are idempotent: the gateway returns the job
        the first attempt created instead of creating another.
        """
        req = pb.DubRequest()
        req.CopyFrom(request)
        if not req.request_id:
            req.request_id = str(uuid.uuid4())
        message = pb.SubmitDubRequest(request=req)
        response = await self._unary(
            lambda: self._stub.SubmitDub(message, timeout=self.timeout), retry_on=_RETRY_SUBMIT
        )
        return response.job

    async def get(self, job_id: str) -> pb.Job:
        """The job ``job_id``; NotFound (``JOB_NOT_FOUND``) when there is none."""
        message = pb.GetJobRequest(job_id=job_id)
        response = await self._unary(lambda: self._stub.GetJob(message, timeout=self.timeout))
        return response.job

    async def list(
        self,
        *,
        states: Sequence[pb.Job.State.ValueType] = (),
        page_size: int = 0,
        view: pb.JobView.ValueType = pb.JOB_VIEW_BASIC,
    ) -> AsyncGenerator[pb.Job, None]:
        """All jobs (in ``states`` if given), newest first, fetching page after page.

        ``page_size`` 0 lets the gateway choose (50); pages may be shorter. The basic
        view leaves out each request's work (segments, media options) and the timing
        report; ``view=pb.JOB_VIEW_FULL`` has them, or :meth:`get` one job. Stop
        iterating to stop fetching.
        """
        token = ""
        while True:
            response = await self._list_page(
                pb.ListJobsRequest(page_size=page_size, page_token=token, states=states, view=view)
            )
            for job in response.jobs:
                yield job
            token = response.next_page_token
            if not token:
                return

    async def _list_page(self, message: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._unary(lambda: self._stub.ListJobs(message, timeout=self.timeout))

    async def cancel(self, job_id: str) -> pb.Job:
        """Cancel a queued or running job and return it (CANCELLED).

        FailedPrecondition (``JOB_ALREADY_FINISHED``) when the job had already ended;
        if that answer comes to a retry, the first attempt may have cancelled the job,
        so the job is fetched and returned when it is CANCELLED.
        """
        message = pb.CancelJobRequest(job_id=job_id)
        attempts = 0

        async def once() -> pb.CancelJobResponse:
            nonlocal attempts
            attempts += 1
            return await self._stub.CancelJob(message, timeout=self.timeout)

        try:
            response = await self._unary(once)
        except FailedPrecondition as exc:
            if attempts > 1 and exc.reason == Reason.JOB_ALREADY_FINISHED:
                job = await self.get(job_id)
                if job.state == pb.Job.State.STATE_CANCELLED:
                    return job
            raise
        return response.job

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncGenerator[pb.Job, None]:
        """Every change of the job, as WatchJob streams it, until the job is terminal.

        With ``after_sequence`` 0 the first job is the current snapshot. When the stream
        breaks with UNAVAILABLE (gateway restarted, connection lost), the client
        reconnects with ``after_sequence`` set to the last sequence it yielded, so each
        change is yielded once, in order (anything at or below that sequence is
        dropped). Ends after yielding a terminal job. Raises Unavailable when
        reconnecting fails for ``retry.reconnect_timeout`` seconds, and the matching
        DubbingError for any other error (e.g. NotFound, or UNIMPLEMENTED from an old
        gateway).
        """
        last = after_sequence
        reconnects = _Reconnects(self.retry)
        while True:
            call = self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=last))
            try:
                async for response in call:
                    job = response.job
                    if job.sequence <= last:
                        continue
                    last = job.sequence
                    reconnects.progressed()
                    yield job
                    if is_terminal(job):
                        return
            except grpc.aio.AioRpcError as exc:
                error = DubbingError.from_rpc_error(exc)
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                await reconnects.pause(error)
                continue
            finally:
                call.cancel()
            # The stream ended cleanly before a terminal job: the gateway closed it early.
            # Catch up with a read, then resume watching.
            job = await self.get(job_id)
            if job.sequence > last:
                last = job.sequence
                reconnects.progressed()
                yield job
            if is_terminal(job):
                return
            await reconnects.pause(
                Unavailable(
                    f"the watch of job {job_id} keeps ending before the job finishes",
                    reason=Reason.WATCH_ENDED,
                )
            )

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a convenience over asyncio.timeout)
        raise_on_failure: bool = False,
        poll_initial: float = 1.0,
        poll_max: float = 20.0,
    ) -> pb.Job:
        """The job once it is terminal (SUCCEEDED, FAILED or CANCELLED).

        Follows :meth:`watch`; if the gateway does not implement WatchJob, polls
        :meth:`get` with a backoff doubling from ``poll_initial`` to ``poll_max`` seconds.

        Raises:
            DeadlineExceeded: (also a ``TimeoutError``) after ``timeout`` seconds.
            JobFailed: with ``raise_on_failure``, when the job FAILED
                (``JobCancelled`` when it was CANCELLED); ``.job`` is the job.
        """
        try:
            async with asyncio.timeout(timeout):
                job = await self._wait(job_id, poll_initial, poll_max)
        except TimeoutError as exc:
            if isinstance(exc, DubbingError):
                raise
            raise DeadlineExceeded(
                f"job {job_id} did not finish within {timeout:g} s", reason=Reason.WAIT_TIMEOUT
            ) from None
        if raise_on_failure:
            failure = job_error(job)
            if failure is not None:
                raise failure
        return job

    async def _wait(self, job_id: str, poll_initial: float, poll_max: float) -> pb.Job:
        last: pb.Job | None = None
        try:
            async with contextlib.aclosing(self.watch(job_id)) as jobs:
                async for job in jobs:
                    last = job
        except DubbingError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return await self._poll(job_id, poll_initial, poll_max)
        if last is not None and is_terminal(last):
            return last
        return await self._poll(job_id, poll_initial, poll_max)

    async def _poll(self, job_id: str, initial: float, maximum: float) -> pb.Job:
        delay = initial
        while True:
            job = await self.get(job_id)
            if is_terminal(job):
                return job
            await asyncio.sleep(delay)
            delay = min(delay * 2, maximum)

    # -- results ---------------------------------------------------------------------

    async def download(self, job_id: str, dest: BinaryIO | str | os.PathLike[str]) -> pb.DubResult:
        """Download the result audio of a SUCCEEDED job into ``dest``; return its description.

        ``dest`` is a path (written through ``<name>.part`` and renamed into place only
        after verification, so a corrupt or partial file never appears under the name)
        or a binary file object (written as the bytes arrive). The bytes are checked
        against the result's ``size_bytes`` and ``sha256``: IntegrityError on a
        mismatch. FailedPrecondition (``JOB_NOT_SUCCEEDED``) when the job has no result.
        A stream broken by UNAVAILABLE restarts from the beginning when ``dest`` is a
        path or a seekable file.
        """
        if isinstance(dest, (str, os.PathLike)):
            path = Path(dest)
            part = path.with_name(path.name + ".part")
            handle = await asyncio.to_thread(part.open, "wb")
            try:
                with handle:
                    result = await self._download_into(job_id, handle)
                await asyncio.to_thread(os.replace, part, path)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            return result
        return await self._download_into(job_id, dest)

    async def _download_into(self, job_id: str, out: BinaryIO) -> pb.DubResult:
        start = out.tell() if out.seekable() else None
        # Every attempt starts over, so a chunk is no progress: one budget for all.
        reconnects = _Reconnects(self.retry)
        while True:
            call = self._stub.DownloadResult(pb.DownloadResultRequest(job_id=job_id))
            digest = hashlib.sha256()
            size = 0
            result: pb.DubResult | None = None
            try:
                async for response in call:
                    if result is None:
                        if not response.HasField("result"):
                            raise IntegrityError(
                                "the download did not start with the result description",
                                reason=Reason.MISSING_RESULT,
                            )
                        result = response.result
                    if response.chunk:
                        digest.update(response.chunk)
                        out.write(response.chunk)
                        size += len(response.chunk)
            except grpc.aio.AioRpcError as exc:
                error = DubbingError.from_rpc_error(exc)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or (size and start is None):
                    raise error from None
                await reconnects.pause(error)
                if start is not None:
                    out.seek(start)
                    out.truncate()
                continue
            finally:
                call.cancel()
            return _verified(job_id, result, size, digest.hexdigest())

    # -- assets ----------------------------------------------------------------------

    async def upload_asset(self, source: AssetSource, *, filename: str | None = None) -> pb.Asset:
        """Upload a file (e.g. a background track) and return the stored asset.

        ``source`` is a path, read in 256 KiB chunks (never whole), or bytes.
        ``filename`` defaults to the path's name (empty for bytes). The SHA-256 is
        computed first (a pass over the file) and sent with the upload, so the gateway
        refuses content that changed on the way: InvalidArgument with reason
        ``CHECKSUM_MISMATCH``. Refer to the asset in a job with
        ``BackgroundAudio(asset=asset.name)`` (see :func:`background_audio`).
        UNAVAILABLE is retried by sending the file again from the start; an upload has
        no deadline.
        """
        name = filename
        if name is None:
            name = "" if isinstance(source, bytes) else Path(source).name
        sha256 = await sha256_of(source)
        response = await self._unary(
            lambda: self._stub.UploadAsset(upload_messages(source, filename=name, sha256=sha256))
        )
        return response.asset

    async def languages(self, provider: str = "") -> builtins.list[pb.ProviderSupport]:
        """What live workers can serve now: providers, their languages and genders."""
        message = pb.ListLanguagesRequest(provider=provider)
        response = await self._unary(
            lambda: self._stub.ListLanguages(message, timeout=self.timeout)
        )
        return builtins.list(response.providers)


def _verified(job_id: str, result: pb.DubResult | None, size: int, sha256: str) -> pb.DubResult:
    if result is None:
        raise IntegrityError(
            f"the download of job {job_id} carried no result description",
            reason=Reason.MISSING_RESULT,
        )
    if size != result.size_bytes:
        raise IntegrityError(
            f"the download of job {job_id} has {size} bytes, the result {result.size_bytes}",
            reason=Reason.SIZE_MISMATCH,
            metadata={"expected": str(result.size_bytes), "actual": str(size)},
        )
    if not result.sha256:
        raise IntegrityError(
            f"the result of job {job_id} has no sha256 to verify the download against",
            reason=Reason.MISSING_RESULT,
        )
    if sha256 != result.sha256.lower():
        raise IntegrityError(
            f"the download of job {job_id} does not match the result's sha256",
            reason=Reason.CHECKSUM_MISMATCH,
            metadata={"expected": result.sha256, "actual": sha256},
        )
    return result
