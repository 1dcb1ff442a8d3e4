"""Ending a grpc.aio call with a rich AIP-193 error.

Every RPC error the gateway returns is a ``google.rpc.Status`` built by
:func:`dubbing.errors.status`: a canonical code, a message, exactly one ErrorInfo
(domain ``dubbing.v1``) and, for validation errors, a BadRequest. It travels in the
``grpc-status-details-bin`` trailer; clients read it with
``await rpc_status.aio.from_call(call)`` (or ``rpc_status.from_call`` for a sync call),
which requires the status message to equal the call's details, as
``rpc_status.to_status`` arranges.

Trailers are metadata, and gRPC clients refuse received metadata above 8 KiB by default
(some calls above the soft limit, every call above 16 KiB, with RESOURCE_EXHAUSTED and
no status at all). The status travels base64-encoded and its message travels twice, so
the message is cut to :data:`MAX_MESSAGE_BYTES`, each ErrorInfo metadata value to
:data:`MAX_METADATA_VALUE_BYTES` and the BadRequest to :data:`MAX_VIOLATIONS_BYTES` of
violations (the message then says how many were left out), which keeps the trailers under
8 KiB whatever a handler passes. Handlers still echo input only once it is validated (a
job id by its format, say), and never whole: these cuts are the last line of defence.
Text that is not valid Unicode (a lone surrogate) is escaped rather than failing the
error itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Protocol, cast

import grpc
import grpc.aio
from grpc_status import rpc_status

from dubbing.errors import Reason, code_value, status

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_METADATA_VALUE_BYTES",
    "MAX_VIOLATIONS_BYTES",
    "abort",
    "abort_invalid_argument",
    "violations_message",
]

# Budgets that keep one error's trailers below the 8 KiB of metadata a client accepts
# by default, once base64 (4/3), percent-encoding and the ErrorInfo are added.
MAX_MESSAGE_BYTES = 512
MAX_METADATA_VALUE_BYTES = 128
MAX_VIOLATIONS_BYTES = 3584
_MAX_DESCRIPTION_CHARS = 300


class _StatusAborter(Protocol):
    # grpc.aio.ServicerContext has this method; the grpc-stubs package lacks it.
    async def abort_with_status(self, status: grpc.Status) -> NoReturn: ...


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    reason: str,
    message: str,
    *,
    metadata: Mapping[str, str] | None = None,
    field_violations: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    """End the call with `code`, `message`, an ErrorInfo for `reason` and field violations.

    The message is cut to :data:`MAX_MESSAGE_BYTES` and metadata values to
    :data:`MAX_METADATA_VALUE_BYTES`; violations beyond :data:`MAX_VIOLATIONS_BYTES` are
    dropped and counted in the message.
    """
    if code is grpc.StatusCode.OK:
        raise ValueError("cannot abort a call with OK")
    kept = _within_budget(field_violations)
    dropped = len(field_violations) - len(kept)
    suffix = f" ({dropped} more violations not listed)" if dropped else ""
    message = _cut_utf8(message, MAX_MESSAGE_BYTES - len(suffix)) + suffix
    values = {k: _cut_utf8(v, MAX_METADATA_VALUE_BYTES) for k, v in (metadata or {}).items()}
    st = status(code_value(code.name), reason, message, metadata=values, field_violations=kept)
    await cast(_StatusAborter, context).abort_with_status(rpc_status.to_status(st))
    raise AssertionError("abort_with_status returned")  # it raises to end the call


async def abort_invalid_argument(
    context: grpc.aio.ServicerContext[Any, Any],
    field_violations: Sequence[tuple[str, str]],
    *,
    reason: str = Reason.INVALID_ARGUMENT,
    message: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> NoReturn:
    """End the call with INVALID_ARGUMENT for `field_violations` (as from validation)."""
    await abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        message if message is not None else violations_message(field_violations),
        metadata=metadata,
        field_violations=field_violations,
    )


def violations_message(field_violations: Sequence[tuple[str, str]]) -> str:
    """A one-line summary naming the first violation, e.g. for INVALID_ARGUMENT."""
    if not field_violations:
        return "invalid request"
    field, description = field_violations[0]
    text = f"invalid request: {field}: {_shorten(description)}"
    if len(field_violations) > 1:
        text += f" (and {len(field_violations) - 1} more, see the BadRequest details)"
    return text


def _shorten(text: str) -> str:
    if len(text) > _MAX_DESCRIPTION_CHARS:
        text = text[: _MAX_DESCRIPTION_CHARS - 3] + "..."
    return _cut_utf8(text, 4 * _MAX_DESCRIPTION_CHARS)  # only makes it valid Unicode


def _cut_utf8(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` of UTF-8, lone surrogates escaped (``\\ud800``)."""
    data = text.encode(errors="backslashreplace")
    if len(data) <= max_bytes:
        return data.decode()
    return data[: max_bytes - 3].decode(errors="ignore") + "..."


def _within_budget(violations: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    kept: list[tuple[str, str]] = []
    used = 0
    for field, description in violations:
        item = (_shorten(field), _shorten(description))
        # Paths and descriptions, plus a few bytes of protobuf framing for each.
        used += len(item[0].encode()) + len(item[1].encode()) + 8
        if used > MAX_VIOLATIONS_BYTES:
            break
        kept.append(item)
    return kept
