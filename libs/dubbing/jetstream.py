"""Connecting to NATS and declaring the JetStream topology both services rely on.

Either service may start first, so both declare everything idempotently. The
names and subjects come from :mod:`dubbing.bus`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from dubbing import bus
from dubbing.logging import get_logger

log = get_logger(__name__)

# How long a worker advert lives in the KV bucket without being refreshed.
WORKER_ADVERT_TTL_SECONDS = 15.0
EVENTS_MAX_AGE_SECONDS = 7 * 24 * 3600.0
CANCELLED_TTL_SECONDS = 7 * 24 * 3600.0
DUPLICATE_WINDOW_SECONDS = 120.0
# Lease renewals are worth nothing once a lease has run out; a gateway that was
# away longer than this finds the leases expired anyway.
LEASES_MAX_AGE_SECONDS = 300.0
# How long an uploaded asset is kept when the bucket is first created.
ASSET_MAX_AGE_SECONDS = 7 * 24 * 3600.0
# How long a large job's request is kept after it was (last) dispatched: the relay
# stores it again at every dispatch, so only a job waiting that long to be claimed
# would miss it.
REQUESTS_MAX_AGE_SECONDS = 7 * 24 * 3600.0


class BusUnavailable(Exception):
    """NATS could not be reached: at start-up, or by a request that needed it."""


class Connectivity:
    """How long the connection to NATS has been up without a break.

    The reconciler judges leases by what it heard on the bus; it trusts that
    silence only after being connected for a whole lease.
    """

    def __init__(self) -> None:
        self._up_since: float | None = None

    def up(self) -> None:
        self._up_since = time.monotonic()

    def down(self) -> None:
        self._up_since = None

    def up_for(self) -> float:
        """Seconds since the connection last came up; 0 while it is down."""
        return 0.0 if self._up_since is None else time.monotonic() - self._up_since


async def connect(
    url: str, *, name: str, connect_timeout: float, connectivity: Connectivity | None = None
) -> NATS:
    """Connect, retrying until `connect_timeout`; afterwards nats-py reconnects forever.

    The first connection is the one place we give up: a service that cannot reach
    its bus at start-up should say so and exit rather than sit there silently.
    `connectivity`, when given, follows the connection's ups and downs.
    """
    watch = connectivity or Connectivity()

    async def on_disconnected() -> None:
        watch.down()
        log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        watch.up()
        log.info("nats_reconnected")

    async def on_error(exc: Exception) -> None:
        log.debug("nats_error", error=str(exc))

    servers = [s.strip() for s in url.split(",") if s.strip()]
    deadline = time.monotonic() + connect_timeout
    last: Exception | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            # nats-py applies max_reconnect_attempts=-1 to the first connect too,
            # retrying forever inside connect(): bound it from outside.
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    name=name,
                    connect_timeout=min(2.0, max(0.1, remaining)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    error_cb=on_error,
                ),
                timeout=remaining,
            )
            watch.up()
            return nc
        except Exception as exc:  # nats-py raises several unrelated types here
            last = exc
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    raise BusUnavailable(
        f"cannot reach NATS at {url} within {connect_timeout:g}s ({last!r}); "
        "is nats-server running with JetStream enabled (-js)?"
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another configuration (e.g. an older version): converge it.
        await js.update_stream(config)


async def ensure_topology(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    asset_max_age_seconds: float = ASSET_MAX_AGE_SECONDS,
) -> None:
    """Declare every stream and bucket. ``asset_max_age_seconds`` applies only when
    this call creates the assets bucket (see :func:`converge_assets_max_age`)."""
    streams = [
        # (name, subject prefix, retention, max age); max age 0 keeps messages
        (bus.JOBS_STREAM, bus.JOBS_SUBJECT_PREFIX, RetentionPolicy.WORK_QUEUE, 0.0),
        (
            bus.EVENTS_STREAM,
            bus.EVENTS_SUBJECT_PREFIX,
            RetentionPolicy.LIMITS,
            EVENTS_MAX_AGE_SECONDS,
        ),
        (
            bus.LEASES_STREAM,
            bus.LEASES_SUBJECT_PREFIX,
            RetentionPolicy.WORK_QUEUE,
            LEASES_MAX_AGE_SECONDS,
        ),
    ]
    for name, prefix, retention, max_age in streams:
        await _ensure_stream(
            js,
            StreamConfig(
                name=name,
                subjects=[f"{prefix}.>"],
                retention=retention,
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=max_age or None,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            ),
        )
    await workers_kv(js, replicas=replicas)
    await cancelled_kv(js, replicas=replicas)
    await results_store(js, replicas=replicas)
    await requests_store(js, replicas=replicas)
    await assets_store(js, replicas=replicas, max_age_seconds=asset_max_age_seconds)


async def _kv(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    try:
        return await js.key_value(config.bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_key_value(config)


async def workers_kv(js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
    return await _kv(
        js,
        KeyValueConfig(
            bucket=bus.WORKERS_BUCKET,
            ttl=WORKER_ADVERT_TTL_SECONDS,
            storage=StorageType.MEMORY,
            replicas=replicas,
        ),
    )


async def cancelled_kv(js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
    return await _kv(
        js,
        KeyValueConfig(
            bucket=bus.CANCELLED_BUCKET,
            ttl=CANCELLED_TTL_SECONDS,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


async def _object_store(
    js: JetStreamContext, bucket: str, *, replicas: int, max_age_seconds: float | None = None
) -> ObjectStore:
    """The bucket, created (file storage) when missing; `max_age_seconds` only applies then."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_object_store(
            bucket,
            config=ObjectStoreConfig(
                storage=StorageType.FILE, replicas=replicas, ttl=max_age_seconds
            ),
        )


async def results_store(js: JetStreamContext, *, replicas: int = 1) -> ObjectStore:
    return await _object_store(js, bus.RESULTS_BUCKET, replicas=replicas)


async def requests_store(js: JetStreamContext, *, replicas: int = 1) -> ObjectStore:
    """Requests too large to travel inside their job message (see ``bus.JobMessage``)."""
    return await _object_store(
        js, bus.REQUESTS_BUCKET, replicas=replicas, max_age_seconds=REQUESTS_MAX_AGE_SECONDS
    )


async def assets_store(
    js: JetStreamContext, *, replicas: int = 1, max_age_seconds: float = ASSET_MAX_AGE_SECONDS
) -> ObjectStore:
    """Uploaded files. The bucket's max age is set when it is created; changing it
    later needs a stream update (nats stream edit OBJ_dubbing_assets)."""
    return await _object_store(
        js, bus.ASSETS_BUCKET, replicas=replicas, max_age_seconds=max_age_seconds
    )


async def converge_assets_max_age(js: JetStreamContext, max_age_seconds: float) -> None:
    """Set the assets bucket's max age to ``max_age_seconds`` if it differs.

    The gateway owns how long assets live (it promises an ``expire_time``), while
    either service may have created the bucket first with another age.
    """
    stream = f"OBJ_{bus.ASSETS_BUCKET}"
    info = await js.stream_info(stream)
    config = info.config
    current = config.max_age or 0.0
    if abs(current - max_age_seconds) < 1e-3:
        return
    config.max_age = max_age_seconds
    await js.update_stream(config)
    log.info("assets_max_age_changed", before_seconds=current, after_seconds=max_age_seconds)


async def caught_up(js: JetStreamContext, stream: str, durable: str) -> bool:
    """Whether `durable` has acked every message `stream` held when this was called.

    The stream's last sequence is read first, so a True answer covers every
    message stored before the call, however busy the stream is since.
    """
    last = (await js.stream_info(stream)).state.last_seq
    info = await js.consumer_info(stream, durable)
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    return bool((floor or 0) >= last or (info.num_pending == 0 and info.num_ack_pending == 0))


def jetstream(nc: NATS, **kwargs: Any) -> JetStreamContext:
    return nc.jetstream(**kwargs)


async def close(nc: NATS, *, flush_seconds: int = 2) -> None:
    """Flush what was published (acks included), then close.

    Not ``drain()``: it waits for every subscription's pending queue to empty,
    and a pull subscription can hold replies that nobody will ever read, which
    makes drain hang until the process is killed.
    """
    try:
        if nc.is_connected:
            await nc.flush(timeout=flush_seconds)
    except Exception as exc:
        log.debug("nats_flush_failed", error=repr(exc))
    await nc.close()
