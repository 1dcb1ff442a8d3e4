"""The exceptions the client raises instead of ``grpc.aio.AioRpcError``.

The tree::

    DubbingError                 any error of the service or of this client
    ├── InvalidArgument          INVALID_ARGUMENT: the request is wrong; see field_violations
    ├── NotFound                 NOT_FOUND: no such job, or no result for it
    ├── FailedPrecondition       FAILED_PRECONDITION: e.g. cancelling a finished job
    ├── Unavailable              UNAVAILABLE after the retries: gateway unreachable or overloaded
    ├── DeadlineExceeded         DEADLINE_EXCEEDED, or ``wait(timeout=...)`` ran out (also a
    │                            builtin ``TimeoutError``)
    ├── IntegrityError           DATA_LOSS: a download did not match the result's size or sha256
    └── JobFailed                a helper expected a SUCCEEDED job and the job FAILED; ``job``
        └── JobCancelled         ... or was CANCELLED

Every instance has the fields of the ``google.rpc.Status`` the service sent
(``code``, ``message``, the ``ErrorInfo`` ``reason`` and ``metadata``, and the
``BadRequest`` ``field_violations``), so callers never parse strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, cast

import google.rpc.status_pb2 as status_pb2
import grpc
from grpc_status import rpc_status

from dubbing import errors
from dubbing.v1 import dubbing_pb2 as pb

_DETAILS_KEY = "grpc-status-details-bin"
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for a ``google.rpc.Code`` number (UNKNOWN when unknown)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class DubbingError(Exception):
    """An error reported by the dubbing service (or detected by this client).

    Attributes:
        code: the canonical gRPC status code.
        reason: the ``ErrorInfo.reason`` (one of ``dubbing.errors.Reason`` for errors of
            the service; empty when the error did not come from the service, e.g. a
            connection failure).
        message: the human-readable message.
        metadata: the ``ErrorInfo.metadata``.
        field_violations: ``(field, description)`` pairs from ``BadRequest``.
        status: the whole ``google.rpc.Status`` when the service sent one.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str]
    field_violations: list[tuple[str, str]]
    status: status_pb2.Status | None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.status = status

    def __str__(self) -> str:
        head = self.code.name + (f" ({self.reason})" if self.reason else "")
        lines = [f"{head}: {self.message}"]
        lines.extend(f"  {field}: {description}" for field, description in self.field_violations)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )

    @classmethod
    def from_status(cls, st: status_pb2.Status) -> DubbingError:
        """The error for a ``google.rpc.Status``, as the subclass matching its code."""
        code = status_code(st.code)
        info = errors.error_info(st)
        return _class_for(code)(
            st.message,
            code=code,
            reason=info.reason if info is not None else "",
            metadata=dict(info.metadata) if info is not None else None,
            field_violations=errors.field_violations(st),
            status=st,
        )

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> DubbingError:
        """The error for a failed call, parsing the rich status from the trailing metadata.

        The status travels in the ``grpc-status-details-bin`` trailer (what
        ``abort_with_status`` sends). When it is absent (e.g. the connection failed
        before any server answered) only the code and details string are known.
        """
        code = err.code()
        details = err.details() or ""
        st: status_pb2.Status | None
        try:
            st = rpc_status.from_call(err)  # type: ignore[arg-type]  # AioRpcError quacks like Call
        except ValueError:
            # The rich status disagrees with the call's code or details: trust the call's
            # code and message but keep the reason and violations.
            st = _status_from_trailers(err)
            if st is not None:
                st.code = code.value[0]
                st.message = details
        except Exception:  # a malformed trailer must not hide the error itself
            st = None
        if st is not None:
            return cls.from_status(st)
        return _class_for(code)(details or code.name, code=code)


def _status_from_trailers(err: grpc.RpcError) -> status_pb2.Status | None:
    # At run time the trailers of an AioRpcError are (key, value) pairs.
    trailers = cast("Iterable[tuple[str, str | bytes]]", err.trailing_metadata() or ())
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


class InvalidArgument(DubbingError):
    """The request is invalid; ``field_violations`` says which fields and why."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DubbingError):
    """No such job (``JOB_NOT_FOUND``) or no stored result (``RESULT_NOT_FOUND``)."""

    default_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(DubbingError):
    """The job or the service is not in a state that allows the call.

    Reasons: ``JOB_ALREADY_FINISHED``, ``JOB_NOT_SUCCEEDED``, ``PROVIDER_UNAVAILABLE``,
    ``LANGUAGE_UNAVAILABLE``, ``MEDIA_DUBBING_UNAVAILABLE``.
    """

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DubbingError):
    """The gateway could not be reached or is temporarily unable to serve, after retries.

    ``reason`` is empty when no gateway answered at all (connection refused, DNS...),
    and e.g. ``DATABASE_UNAVAILABLE`` when the gateway answered.
    """

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DubbingError, TimeoutError):
    """A call did not complete within its deadline, or ``wait(timeout=...)`` ran out."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class IntegrityError(DubbingError):
    """Downloaded bytes do not match the result's ``size_bytes`` or ``sha256``.

    Reasons: ``SIZE_MISMATCH``, ``CHECKSUM_MISMATCH``, ``MISSING_RESULT``.
    """

    default_code = grpc.StatusCode.DATA_LOSS


class JobFailed(DubbingError):
    """A job ended without a result; ``job`` is the terminal job.

    For a FAILED job, ``code``, ``reason``, ``message`` and ``metadata`` are those of
    ``job.error``.
    """

    job: pb.Job

    def __init__(self, job: pb.Job) -> None:
        info = errors.error_info(job.error)
        message = job.error.message or f"job {job.id} failed"
        super().__init__(
            message,
            code=status_code(job.error.code) if job.error.code else grpc.StatusCode.UNKNOWN,
            reason=info.reason if info is not None else "",
            metadata=dict(info.metadata) if info is not None else None,
            field_violations=errors.field_violations(job.error),
            status=job.error,
        )
        self.job = job


class JobCancelled(JobFailed):
    """A job was cancelled before it produced a result."""

    def __init__(self, job: pb.Job) -> None:
        DubbingError.__init__(
            self,
            f"job {job.id} was cancelled",
            code=grpc.StatusCode.CANCELLED,
            reason="JOB_CANCELLED",
        )
        self.job = job


def job_error(job: pb.Job) -> JobFailed | None:
    """The exception describing a FAILED or CANCELLED job; None for any other state."""
    if job.state == pb.Job.State.STATE_FAILED:
        return JobFailed(job)
    if job.state == pb.Job.State.STATE_CANCELLED:
        return JobCancelled(job)
    return None


_CLASSES: dict[grpc.StatusCode, type[DubbingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
}


def _class_for(code: grpc.StatusCode) -> type[DubbingError]:
    return _CLASSES.get(code, DubbingError)
