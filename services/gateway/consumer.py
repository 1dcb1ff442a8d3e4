"""The gateway's durable pull consumers: fetch in batches, hand each message over.

Every gateway replica pulls from the same durable consumer, so each message is
handled by one of them; the handler acks only after its change is committed,
so a gateway that dies mid-batch leaves the rest for another delivery.
"""

from __future__ import annotations

import asyncio
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
            msgs = await sub.fetch(batch, timeout=1.0)
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
