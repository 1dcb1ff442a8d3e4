"""Requests whose bytes do not decode: INVALID_ARGUMENT with an ErrorInfo, never UNKNOWN.

grpc deserializes a request before any handler runs. When the bytes are not the message
the method takes (random bytes, a truncated message, invalid UTF-8 in a string field),
``FromString`` raises ``DecodeError`` and grpc answers UNKNOWN ("Unexpected DecodeError")
with no ErrorInfo; in a client-streaming call the error surfaces inside the handler
instead, as if the gateway had failed. A client's garbage is neither our failure nor
unknown, so :class:`RefuseUndecodable`, a server interceptor, wraps every method's
handler once:

- its request deserializer catches ``DecodeError`` and hands on an :class:`Undecodable`
  in place of the message;
- its behaviour ends the call with INVALID_ARGUMENT, reason ``MALFORMED_REQUEST``, when
  it meets one: before the handler runs for a unary request, or when the handler's
  iteration reaches that message for a streaming one. The gateway logs one warning line
  naming the method and the peer; no traceback.

Handlers of a ``grpc.aio`` server are coroutines or async generators, and streaming
ones iterate their requests (``context.read()`` would see the :class:`Undecodable`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from dubbing.errors import Reason
from dubbing.logging import get_logger
from gateway import rpc_errors

__all__ = ["RefuseUndecodable", "Undecodable"]

log = get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# What a handler holds; the stubs type it for the sync server, the aio server runs async ones.
Behaviour = Callable[..., Any]


if TYPE_CHECKING:  # generic in the stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the deserializer hands on for bytes that are not the method's request."""

    error: str


class RefuseUndecodable(_Interceptor):
    """Wraps each method's handler (once, then cached) as the module docstring says."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _wrap(handler, method))
            self._wrapped[method] = cached
        return cast("grpc.RpcMethodHandler[Any, Any]", cached[1])


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> Any:
    decode = handler.request_deserializer

    def deserialize(raw: bytes) -> Any:
        try:
            return decode(raw) if decode is not None else raw
        except DecodeError as exc:
            return Undecodable(str(exc))

    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, method, streaming=False), deserialize, serialize
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guarded(handler.unary_stream, method, streaming=False), deserialize, serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _guarded(handler.stream_unary, method, streaming=True), deserialize, serialize
        )
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(
        _guarded(handler.stream_stream, method, streaming=True), deserialize, serialize
    )


def _guarded(inner: Behaviour, method: str, *, streaming: bool) -> Any:
    """`inner` refusing Undecodable requests, of the same kind (async generator or
    coroutine), since grpc.aio serves the two differently."""

    async def checked(request: Any, context: Context) -> Any:
        if streaming:
            return _refusing(request, context, method)
        if isinstance(request, Undecodable):
            await _refuse(context, method, request)
        return request

    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in inner(await checked(request, context), context):
                yield response

        return generator

    async def coroutine(request: Any, context: Context) -> Any:
        return await inner(await checked(request, context), context)

    return coroutine


async def _refusing(requests: AsyncIterator[Any], context: Context, method: str) -> Any:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(context, method, request)
        yield request


async def _refuse(context: Context, method: str, request: Undecodable) -> None:
    peer = context.peer()
    log.warning("request_undecodable", method=method, peer=peer, error=request.error)
    await rpc_errors.abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.MALFORMED_REQUEST,
        f"the request cannot be decoded: {request.error}",
        metadata={"method": method},
    )
