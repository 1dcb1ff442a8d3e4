"""The gateway's durable pull consumers: fetch in batches, hand each message over.

Every gateway replica pulls from the same durable consumer, so each message is
handled by one of them; the handler acks only after its change is committed,
so a gateway that dies mid-batch leaves the rest for another delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from dubbing.logging import get_logger

log = get_logger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


async def consume(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    subject: str,
    handle: Handler,
    batch: int = 128,
    ack_wait: float = 30.0,
) -> None:
    """Feed every message of `subject` to `handle`, one at a time, until cancelled."""
    sub = await js.pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=10_000,
        ),
    )
    while True:
        try:
            msgs = await _fetch(sub, batch)
        except (NatsTimeoutError, TimeoutError):  # empty: nothing to do yet
            continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # NATS away; nats-py reconnects underneath
            log.warning("consumer_fetch_failed", durable=durable, error=repr(exc))
            await asyncio.sleep(0.5)
            continue
        for msg in msgs:
            await handle(msg)


async def _fetch(sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """The next message as soon as it is there, with up to `batch` - 1 already waiting.

    Not ``fetch(batch)``: once nats-py's batch fetch has a message from its
    lingering pull, it keeps waiting for the rest of the batch until the timeout,
    so on a quiet stream every message waited up to a second before being handled.
    A single-message fetch returns as soon as one arrives; each message says how
    many more are pending, and exactly those are fetched (they are there, so the
    fetch returns at once; its short timeout covers another replica taking some).
    """
    msgs = await sub.fetch(1, timeout=1.0)
    pending = msgs[-1].metadata.num_pending
    if pending and batch > 1:
        with contextlib.suppress(NatsTimeoutError, TimeoutError):
            msgs += await sub.fetch(min(batch - 1, pending), timeout=0.2)
    return msgs
