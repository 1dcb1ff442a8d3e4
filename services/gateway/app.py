"""Assembling and running the gateway: store, bus, background loops and the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dubbing import jetstream
from dubbing.jobstate import AttemptPolicy
from dubbing.logging import get_logger
from dubbing.process import StartupError
from dubbing.settings import GatewaySettings
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from gateway import decoding, pagination, reflection
from gateway.assets import AssetStore
from gateway.events import EventApplier
from gateway.leases import LeaseApplier
from gateway.outbox import OutboxRelay
from gateway.reconciler import Reconciler
from gateway.registry import WorkerRegistry
from gateway.servicer import DubbingServicer
from gateway.store import StoreUnavailable, open_store
from gateway.transcript_files import MAX_FILE_BYTES
from gateway.validation import Limits
from gateway.watch import WatchHub

log = get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DubbingService"].full_name


async def run_gateway(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down within ``settings.grace_seconds``."""
    policy = AttemptPolicy(
        lease_seconds=settings.ack_wait_seconds, max_attempts=settings.max_deliver
    )
    try:
        store = await open_store(
            settings.database_url, connect_timeout=settings.connect_timeout_seconds, policy=policy
        )
    except StoreUnavailable as exc:
        raise StartupError(str(exc)) from exc
    connectivity = jetstream.Connectivity()
    try:
        nc = await jetstream.connect(
            settings.nats_url,
            name="dubbing-gateway",
            connect_timeout=settings.connect_timeout_seconds,
            connectivity=connectivity,
        )
    except BaseException:
        await store.close()
        raise
    js = nc.jetstream()
    asset_max_age = settings.asset_max_age_hours * 3600.0
    await jetstream.ensure_topology(
        js, replicas=settings.stream_replicas, asset_max_age_seconds=asset_max_age
    )
    await jetstream.converge_assets_max_age(js, asset_max_age)
    hub = WatchHub()
    await hub.start(nc)
    registry = WorkerRegistry(nc, js, await jetstream.workers_kv(js))
    relay = OutboxRelay(
        store, js, requests=await jetstream.requests_store(js), max_payload=nc.max_payload
    )
    applier = EventApplier(store, js, hub)
    leases = LeaseApplier(store, nc, js)
    reconciler = Reconciler(store, js, hub, connectivity)

    servicer = DubbingServicer(
        store=store,
        hub=hub,
        registry=registry,
        nc=nc,
        cancelled=await jetstream.cancelled_kv(js),
        results=await jetstream.results_store(js),
        assets=AssetStore(
            await jetstream.assets_store(
                js, replicas=settings.stream_replicas, max_age_seconds=asset_max_age
            ),
            max_age_seconds=asset_max_age,
            max_bytes=settings.max_asset_bytes,
        ),
        limits=Limits.from_settings(settings),
        page_tokens=pagination.PageTokenCodec(
            hashlib.sha256(settings.page_token_secret.encode()).digest()
        ),
        watch_poll_seconds=settings.watch_poll_seconds,
    )
    server = grpc.aio.server(
        # Undecodable request bytes are INVALID_ARGUMENT with an ErrorInfo (gateway.decoding).
        interceptors=[decoding.RefuseUndecodable()],
        options=[
            # Long-lived HTTP/2 clients reconnect now and then, so load spreads
            # over gateway replicas behind a Kubernetes Service.
            ("grpc.max_connection_age_ms", 30 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 60 * 1000),
            # Room for a transcript file at its limit plus the rest of the request.
            ("grpc.max_receive_message_length", 2 * MAX_FILE_BYTES),
        ],
    )
    pb_grpc.add_DubbingServiceServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(server, (SERVICE_NAME, health.SERVICE_NAME))
    try:
        port = server.add_insecure_port(settings.listen)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {settings.listen}: {exc}") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {settings.listen}")

    tasks = [
        asyncio.create_task(relay.run(), name="outbox-relay"),
        asyncio.create_task(applier.run(), name="event-applier"),
        asyncio.create_task(leases.run(), name="lease-applier"),
        asyncio.create_task(reconciler.run(), name="reconciler"),
        asyncio.create_task(registry.run(), name="worker-registry"),
    ]
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = settings.listen.rsplit(":", 1)[0]
    log.info(
        "gateway_ready", listen=f"{host}:{port}", port=port, database=_redact(settings.database_url)
    )

    await stop.wait()
    log.info("gateway_stopping")
    await health_servicer.enter_graceful_shutdown()
    servicer.begin_shutdown()
    await server.stop(settings.grace_seconds)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await hub.stop()
    await jetstream.close(nc)
    await store.close()
    stats = store.stats
    log.info(
        "gateway_stopped",
        store_transactions=stats.transactions,
        store_operations=stats.operations,
    )


def _redact(url: str) -> str:
    """The database URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
