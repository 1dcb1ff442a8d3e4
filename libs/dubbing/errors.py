"""Error vocabulary shared by the gateway, the worker and the client (AIP-193).

Every error the service reports, whether as an RPC error or as a failed job's
``error``, is a ``google.rpc.Status`` carrying exactly one ``ErrorInfo`` whose
``domain`` is :data:`DOMAIN` and whose ``reason`` is one of :class:`Reason`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import google.rpc.code_pb2 as code_pb2
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
from google.protobuf import any_pb2

DOMAIN = "dubbing.v1"


class Code(enum.StrEnum):
    """google.rpc.Code names, as events and ErrorDetail carry them (see :func:`code_value`)."""

    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"


class Reason(enum.StrEnum):
    """Every ErrorInfo reason the service, its workers and its client use, in one place."""

    # Request validation (INVALID_ARGUMENT)
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"  # the request's bytes do not decode
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    ASSET_NOT_FOUND = "ASSET_NOT_FOUND"
    ASSET_TOO_LARGE = "ASSET_TOO_LARGE"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    # Lookups (NOT_FOUND)
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    RESULT_NOT_FOUND = "RESULT_NOT_FOUND"
    # State (FAILED_PRECONDITION)
    JOB_ALREADY_FINISHED = "JOB_ALREADY_FINISHED"
    JOB_NOT_SUCCEEDED = "JOB_NOT_SUCCEEDED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    LANGUAGE_UNAVAILABLE = "LANGUAGE_UNAVAILABLE"
    GENDER_UNAVAILABLE = "GENDER_UNAVAILABLE"
    MEDIA_DUBBING_UNAVAILABLE = "MEDIA_DUBBING_UNAVAILABLE"
    # Execution failures reported on a job: from a provider (bad input, INVALID_ARGUMENT)
    LANGUAGE_NOT_SUPPORTED = "LANGUAGE_NOT_SUPPORTED"
    GENDER_NOT_SUPPORTED = "GENDER_NOT_SUPPORTED"
    SPEED_NOT_SUPPORTED = "SPEED_NOT_SUPPORTED"
    VOICE_NOT_FOUND = "VOICE_NOT_FOUND"
    EMPTY_TEXT = "EMPTY_TEXT"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    # ... from a provider, our account's fault, not the caller's (FAILED_PRECONDITION)
    PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
    PROVIDER_QUOTA_EXCEEDED = "PROVIDER_QUOTA_EXCEEDED"
    # ... from a provider, worth retrying (UNAVAILABLE once retries run out)
    PROVIDER_ERROR = "PROVIDER_ERROR"
    SYNTHESIS_FAILED = "SYNTHESIS_FAILED"
    VOICE_LOAD_FAILED = "VOICE_LOAD_FAILED"
    # ... from the background track
    BACKGROUND_FETCH_FAILED = "BACKGROUND_FETCH_FAILED"
    BACKGROUND_INVALID = "BACKGROUND_INVALID"
    BACKGROUND_TOO_LARGE = "BACKGROUND_TOO_LARGE"
    BACKGROUND_UNREADABLE = "BACKGROUND_UNREADABLE"
    BACKGROUND_UNAVAILABLE = "BACKGROUND_UNAVAILABLE"
    # ... from the service itself
    MAX_DELIVERIES_EXCEEDED = "MAX_DELIVERIES_EXCEEDED"
    INVALID_JOB_MESSAGE = "INVALID_JOB_MESSAGE"
    JOB_UNDELIVERABLE = "JOB_UNDELIVERABLE"  # the work queue refused its message, again and again
    REQUEST_NOT_STORED = "REQUEST_NOT_STORED"  # a large request's object was gone when claimed
    ENCODING_FAILED = "ENCODING_FAILED"
    INTERNAL = "INTERNAL"
    # Infrastructure (UNAVAILABLE)
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    GATEWAY_SHUTTING_DOWN = "GATEWAY_SHUTTING_DOWN"
    BUS_UNAVAILABLE = "BUS_UNAVAILABLE"
    # Raised by the Python client itself (dubbing.client), never sent by the service
    MISSING_RESULT = "MISSING_RESULT"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    WAIT_TIMEOUT = "WAIT_TIMEOUT"
    WATCH_ENDED = "WATCH_ENDED"


def code_value(name: str) -> int:
    """google.rpc.Code number for a code name such as ``"INVALID_ARGUMENT"``."""
    return int(code_pb2.Code.Value(name))


def status(
    code: int,
    reason: str,
    message: str,
    *,
    metadata: Mapping[str, str] | None = None,
    field_violations: Iterable[tuple[str, str]] = (),
) -> status_pb2.Status:
    """A Status with one ErrorInfo and, if given, a BadRequest of (field, description)."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=dict(metadata or {}))
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
        for f, d in field_violations
    ]
    if violations:
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=violations))
        details.append(bad)
    return status_pb2.Status(code=code, message=message, details=details)


def error_info(st: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in st.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(st: status_pb2.Status) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for detail in st.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out
