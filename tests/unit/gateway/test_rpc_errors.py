"""Errors stay within what a default gRPC client accepts, whatever a handler passes."""

from __future__ import annotations

import google.rpc.status_pb2 as status_pb2
import grpc
import pytest

from dubbing import errors
from gateway import rpc_errors
from gateway.store import new_job_id
from gateway.validation import JOB_ID, job_id_problem
from tests.helpers import RecordingContext


def sent(context: RecordingContext) -> tuple[status_pb2.Status, int]:
    """The Status a call was aborted with, and the bytes of its trailers."""
    assert context.status is not None
    trailers = dict(context.status.trailing_metadata)
    details = trailers["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    size = sum(len(k) + len(v) for k, v in trailers.items()) + len(context.status.details)
    return status_pb2.Status.FromString(details), size


async def test_metadata_values_and_messages_are_cut() -> None:
    context = RecordingContext()
    huge = "x" * 20_000
    with pytest.raises(grpc.aio.AbortError):
        await rpc_errors.abort(
            context,  # type: ignore[arg-type]
            grpc.StatusCode.NOT_FOUND,
            errors.Reason.JOB_NOT_FOUND,
            f"job {huge} not found",
            metadata={"job_id": huge},
            field_violations=[(huge, huge)] * 100,
        )
    st, size = sent(context)
    info = errors.error_info(st)
    assert info is not None
    assert len(info.metadata["job_id"].encode()) <= rpc_errors.MAX_METADATA_VALUE_BYTES
    assert len(st.message.encode()) <= rpc_errors.MAX_MESSAGE_BYTES
    assert size < 8 * 1024  # a default client's soft limit on received metadata


async def test_text_that_is_not_unicode_is_escaped_not_fatal() -> None:
    context = RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        await rpc_errors.abort_invalid_argument(
            context,  # type: ignore[arg-type]
            [("request.x", "holds 'Bonjour \ud800'")],
            metadata={"value": "\udfff"},
        )
    st, _ = sent(context)
    assert "\\ud800" in st.message
    assert errors.field_violations(st) == [("request.x", "holds 'Bonjour \\ud800'")]
    info = errors.error_info(st)
    assert info is not None and info.metadata["value"] == "\\udfff"


def test_job_ids_the_store_makes_have_the_format_the_api_checks() -> None:
    for _ in range(100):
        assert JOB_ID.fullmatch(new_job_id())


@pytest.mark.parametrize(
    "job_id",
    [
        "nope",
        "x" * 20_000,
        "01A233E6-838D-735E-B5A4-15E1FDBA9CA5",
        "01a233e6838d735eb5a415e1fdba9ca5",
    ],
)
def test_anything_else_is_not_a_job_id(job_id: str) -> None:
    assert job_id_problem(job_id) is not None
    assert job_id_problem("") == "must not be empty"
