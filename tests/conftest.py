"""Fixtures: a real local stack (nats-server, gateway, worker processes) per session.

Tests that break things (kill a worker, restart NATS or the gateway) start
their own stack with :func:`make_stack` instead of sharing this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from dubbing.devstack import NATS_READY, NatsServer, Stack, free_port
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc

# Short timings so redelivery and adverts happen within a test's patience.
FAST_ENV = {
    "DUBBING_ACK_WAIT_SECONDS": "3",
    "DUBBING_ADVERT_INTERVAL_SECONDS": "1",
    "DUBBING_WATCH_POLL_SECONDS": "1",
    "DUBBING_GRACE_SECONDS": "3",
    "DUBBING_LOG_LEVEL": "debug",
}


StackFactory = Callable[..., Stack]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own (random port, store in tmp_path)."""
    s = NatsServer(tmp_path / "nats")
    s.start().wait_for(NATS_READY)
    yield s
    s.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    stacks: list[Stack] = []

    def factory(workers: int = 1, **env: str) -> Stack:
        stack = Stack(
            tmp_path / f"stack-{len(stacks)}",
            listen=f"127.0.0.1:{free_port()}",
            workers=workers,
            extra_env={**FAST_ENV, **env},
        )
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("stack"),
        listen=f"127.0.0.1:{free_port()}",
        extra_env=FAST_ENV,
    )
    with s.running():
        yield s


@pytest.fixture(scope="session")
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.listen) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> pb_grpc.DubbingServiceAsyncStub:
    return pb_grpc.DubbingServiceStub(channel)
