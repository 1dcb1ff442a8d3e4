"""Reporting one attempt's progress to the gateway through the events stream."""

from __future__ import annotations

import time
from typing import Any

from nats.js import JetStreamContext
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from dubbing import bus
from dubbing.logging import get_logger

log = get_logger(__name__)


class EventPublisher:
    """Numbers and publishes the events of one run of one attempt.

    Events of an attempt are published one at a time, each awaited, so the
    stream holds them in `seq` order; Nats-Msg-Id makes a retried publish a no-op.
    A publish is retried through a NATS outage for up to `retry_seconds`: losing
    the final event would leave the job RUNNING until redelivery.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        job_id: str,
        attempt: int,
        run_id: str,
        worker_id: str,
        retry_seconds: float = 120.0,
    ) -> None:
        self._js = js
        self.job_id = job_id
        self.attempt = attempt
        self.run_id = run_id
        self.worker_id = worker_id
        self._seq = 0
        self._retry_seconds = retry_seconds
        self._last_progress_time = 0.0
        self._last_stage = ""

    async def emit(self, type_: bus.EventType, **fields: Any) -> bus.JobEvent:
        self._seq += 1
        event = bus.JobEvent(
            job_id=self.job_id,
            attempt=self.attempt,
            run_id=self.run_id,
            seq=self._seq,
            type=type_,
            worker_id=self.worker_id,
            time=time.time(),
            **fields,
        )
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(self._retry_seconds),
            reraise=True,
        ):
            with attempt:
                await self._js.publish(
                    event.subject,
                    event.encode(),
                    headers={bus.HEADER_MSG_ID: event.msg_id},
                )
        return event

    async def progress(self, stage: str, progress: float, *, min_interval: float = 0.25) -> None:
        """A PROGRESS event, throttled so long jobs do not flood the stream; a new
        stage always goes out."""
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_progress_time < min_interval:
            return
        self._last_progress_time = now
        self._last_stage = stage
        await self.emit(bus.EventType.PROGRESS, stage=stage, progress=progress)
