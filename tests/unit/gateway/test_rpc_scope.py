"""The error contract every RPC keeps, whatever its handler raises."""

from __future__ import annotations

import google.rpc.status_pb2 as status_pb2
import grpc
import pytest
import structlog

from dubbing import errors
from dubbing.jetstream import BusUnavailable
from gateway.servicer import _rpc_scope
from gateway.store import StoreUnavailable
from tests.helpers import RecordingContext


def rich(status: grpc.Status | None) -> tuple[grpc.StatusCode, str]:
    assert status is not None
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    st = status_pb2.Status.FromString(details)
    info = errors.error_info(st)
    assert info is not None and info.domain == errors.DOMAIN
    assert st.message == status.details  # what rpc_status.from_call requires
    return status.code, info.reason


@pytest.mark.parametrize(
    ("raised", "code", "reason"),
    [
        (StoreUnavailable("database is down"), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (BusUnavailable("nats is down"), grpc.StatusCode.UNAVAILABLE, "BUS_UNAVAILABLE"),
        (KeyError("bug"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_failures_become_rich_errors(
    raised: Exception, code: grpc.StatusCode, reason: str
) -> None:
    context = RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        async with _rpc_scope("GetJob", context):  # type: ignore[arg-type]
            raise raised
    assert rich(context.status) == (code, reason)


async def test_an_abort_chosen_by_the_handler_passes_through() -> None:
    context = RecordingContext()
    chosen = grpc.aio.AbortError()
    with pytest.raises(grpc.aio.AbortError) as caught:
        async with _rpc_scope("GetJob", context):  # type: ignore[arg-type]
            raise chosen
    assert caught.value is chosen and context.status is None


async def test_log_context_is_bound_inside_and_cleared_after() -> None:
    context = RecordingContext()
    async with _rpc_scope("SubmitDub", context):  # type: ignore[arg-type]
        structlog.contextvars.bind_contextvars(job_id="j1", request_id="r1")
        bound = structlog.contextvars.get_contextvars()
    assert bound["rpc"] == "SubmitDub" and bound["job_id"] == "j1"
    left = structlog.contextvars.get_contextvars()
    assert not {"rpc", "job_id", "request_id"} & set(left)
