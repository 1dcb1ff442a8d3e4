"""Running a service's asyncio main until SIGINT/SIGTERM, shared by gateway and worker."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import uvloop

from dubbing.jetstream import BusUnavailable
from dubbing.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class StartupError(Exception):
    """A dependency (NATS, the database) is unreachable or misconfigured at start-up."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop: libuv's loop roughly halves the per-call overhead of
    the event loop under grpc.aio and nats-py, which is most of a gateway's CPU."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack, to see what a stuck process waits on."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def serve(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; the first SIGINT/SIGTERM sets `stop`, a second one exits at once.

    Start-up errors are reported as one clear line and exit code 2, not a traceback.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("forced_exit", signal=signal.Signals(signum).name)
                sys.exit(1)
            log.info("signal_received", signal=signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
        await main(stop)

    try:
        run(runner())
    except (BusUnavailable, StartupError) as exc:
        log.error("startup_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
