"""Configuration from environment variables (prefix ``DUBBING_``), with documented defaults.

Both services and the CLI read their settings here so that one variable means one
thing everywhere. Every field below is listed in the README.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dubbing import limits


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUBBING_", extra="ignore")

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma separated"
    )
    # How long start-up waits for NATS (or the database) before failing with a clear error.
    connect_timeout_seconds: float = 10.0
    # JetStream replicas for the streams, buckets and object store (3 in production).
    stream_replicas: int = 1
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    # The lease of a running job: a run that gives no sign of life for this long
    # is presumed dead and its job dispatched again (workers renew every third of
    # it). Also JetStream's ack_wait while a worker claims a message. Set the same
    # value on gateways and workers.
    ack_wait_seconds: float = Field(30.0, gt=0)
    # Attempts before a job fails for good (MAX_DELIVERIES_EXCEEDED); the gateway's
    # value travels with each message, a worker's only serves older messages.
    max_deliver: int = Field(5, ge=1)


class GatewaySettings(CommonSettings):
    listen: str = Field("127.0.0.1:50051", description="host:port the gRPC server binds")
    database_url: str = "sqlite:///var/dubbing.db"
    # Longest transcript a job may carry (see the README's limits table).
    max_segments: int = 5000
    max_characters: int = 500_000
    # Watchers re-read the database this often even without a change notification,
    # so a watch survives a lost notification (e.g. during a NATS outage).
    watch_poll_seconds: float = 2.0
    # Signs ListJobs page tokens; set the same value on every replica.
    page_token_secret: str = "dubbing-dev-page-token-secret"
    grace_seconds: float = 10.0
    # Largest file UploadAsset accepts, bytes (2 GiB).
    max_asset_bytes: int = Field(limits.MAX_MEDIA_BYTES, gt=0)
    # How long uploaded assets are kept; the gateway sets the assets bucket's max age.
    asset_max_age_hours: float = Field(168.0, gt=0)


class WorkerSettings(CommonSettings):
    worker_id: str = ""  # empty: hostname-pid
    providers: str = "local"  # comma separated
    concurrency: int = 2
    # Delay before a transiently failed job is retried: base * 2^(attempt-1), capped.
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    # How often the worker re-advertises its capabilities; the advert lives 3x this.
    advert_interval_seconds: float = 5.0
    grace_seconds: float = 25.0
    # Where jobs write their working files (dub track, background, encoded result):
    # about 4 bytes per sample of programme. Empty: the system's temporary directory.
    work_dir: str = ""


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUBBING_", extra="ignore")

    gateway: str = Field("127.0.0.1:50051", description="gateway address used by the CLI")
