"""The contract between the gateway and the workers on NATS JetStream.

Pure data and encode/decode functions, no I/O: ``dubbing.nats`` does the talking.

Streams, subjects and buckets::

    DUBBING_JOBS     work queue   dubbing.jobs.<kind>.<provider>   gateway outbox -> workers
    DUBBING_EVENTS   limits       dubbing.events.<job_id>          workers -> gateway
    dubbing.changes.<job_id>      core NATS, gateway -> gateways   "job changed, re-read it"
    dubbing.cancel.<job_id>       core NATS, gateway -> workers    "stop working on it"
    KV  dubbing_workers           worker adverts (capabilities), expire unless refreshed
    KV  dubbing_cancelled         job ids cancelled by a client
    OBJ dubbing_results           result audio, one object per job attempt
    OBJ dubbing_assets            uploaded files (background tracks), expire after max age

A job message carries the serialized ``dubbing.v1.DubRequest`` and the job id in
headers; ``Nats-Msg-Id`` is the job id so a re-published outbox row is dropped by
the stream's duplicate window. Events are JSON so they stay readable with
``nats sub``; each carries (attempt, seq) so the gateway can apply them
idempotently, in order, and fenced by attempt.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

JOBS_STREAM = "DUBBING_JOBS"
JOBS_SUBJECT_PREFIX = "dubbing.jobs"
EVENTS_STREAM = "DUBBING_EVENTS"
EVENTS_SUBJECT_PREFIX = "dubbing.events"
CHANGES_SUBJECT_PREFIX = "dubbing.changes"
CANCEL_SUBJECT_PREFIX = "dubbing.cancel"
WORKERS_BUCKET = "dubbing_workers"
CANCELLED_BUCKET = "dubbing_cancelled"
RESULTS_BUCKET = "dubbing_results"
ASSETS_BUCKET = "dubbing_assets"
# Public asset names are "assets/<id>"; the object in ASSETS_BUCKET is named <id>.
ASSET_NAME_PREFIX = "assets/"
GATEWAY_EVENTS_CONSUMER = "gateway-events"

HEADER_JOB_ID = "Dubbing-Job-Id"
# Attempts already made before this message was published (0 for a new job; a
# re-published job continues its count so fencing stays monotonic).
HEADER_ATTEMPT_BASE = "Dubbing-Attempt-Base"
HEADER_MSG_ID = "Nats-Msg-Id"


class JobKind(enum.StrEnum):
    TRANSCRIPT = "transcript"
    MEDIA = "media"


def job_subject(kind: JobKind, provider: str) -> str:
    return f"{JOBS_SUBJECT_PREFIX}.{kind.value}.{provider}"


def asset_name(object_id: str) -> str:
    """The public name of the asset stored as `object_id` in ASSETS_BUCKET."""
    return ASSET_NAME_PREFIX + object_id


def asset_object_id(name: str) -> str:
    """The object in ASSETS_BUCKET behind the public name ``assets/<id>``."""
    return name.removeprefix(ASSET_NAME_PREFIX)


def worker_consumer_name(kind: JobKind, provider: str) -> str:
    """Durable consumer shared by every worker serving (kind, provider)."""
    return f"workers-{kind.value}-{provider}"


def event_subject(job_id: str) -> str:
    return f"{EVENTS_SUBJECT_PREFIX}.{job_id}"


def change_subject(job_id: str) -> str:
    return f"{CHANGES_SUBJECT_PREFIX}.{job_id}"


def cancel_subject(job_id: str) -> str:
    return f"{CANCEL_SUBJECT_PREFIX}.{job_id}"


def job_id_from_subject(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def result_object_name(job_id: str, attempt: int) -> str:
    # One object per attempt: a late, superseded attempt must not overwrite the
    # result that the job record points to.
    return f"{job_id}/attempt-{attempt}"


@dataclass(frozen=True, slots=True)
class JobMessage:
    """A job on the work queue."""

    job_id: str
    kind: JobKind
    provider: str
    request: bytes  # serialized dubbing.v1.DubRequest
    attempt_base: int = 0

    @property
    def subject(self) -> str:
        return job_subject(self.kind, self.provider)

    def headers(self) -> dict[str, str]:
        return {
            HEADER_MSG_ID: self.job_id,
            HEADER_JOB_ID: self.job_id,
            HEADER_ATTEMPT_BASE: str(self.attempt_base),
        }

    @classmethod
    def decode(cls, subject: str, headers: Mapping[str, str] | None, data: bytes) -> JobMessage:
        headers = headers or {}
        parts = subject.split(".")
        if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != JOBS_SUBJECT_PREFIX:
            raise ValueError(f"not a job subject: {subject!r}")
        job_id = headers.get(HEADER_JOB_ID) or headers.get(HEADER_MSG_ID)
        if not job_id:
            raise ValueError("job message without a job id header")
        return cls(
            job_id=job_id,
            kind=JobKind(parts[2]),
            provider=parts[3],
            request=data,
            attempt_base=int(headers.get(HEADER_ATTEMPT_BASE, "0")),
        )


class EventType(enum.StrEnum):
    STARTED = "started"  # an attempt began (job -> RUNNING)
    PROGRESS = "progress"  # stage/progress changed
    RETRYING = "retrying"  # the attempt failed transiently and was handed back (-> QUEUED)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the worker stopped because the job was cancelled


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


def _known_fields(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Drop fields this version does not know, so a newer peer can add some."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


@dataclass(frozen=True, slots=True)
class ResultInfo:
    artifact: str
    format: str  # "wav" | "mp3" | "opus" | "flac"
    sample_rate_hz: int
    duration_seconds: float
    size_bytes: int
    sha256: str
    # base64 of a serialized dubbing.v1.TimingReport; protobuf keeps a 5,000-segment
    # report around 200 KB, well inside NATS's default 1 MB payload.
    timing: str = ""
    loudness_lufs: float = 0.0
    channels: int = 1


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    # A google.rpc.Code name, e.g. "INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL".
    code: str
    reason: str  # UPPER_SNAKE, goes into ErrorInfo.reason
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What a worker reports about one attempt of one job."""

    job_id: str
    attempt: int
    seq: int  # 1, 2, ... within the attempt
    type: EventType
    worker_id: str
    time: float  # unix seconds
    stage: str = ""
    progress: float = 0.0
    result: ResultInfo | None = None
    error: ErrorDetail | None = None
    generated_audio_seconds: float = 0.0
    characters: int = 0

    @property
    def subject(self) -> str:
        return event_subject(self.job_id)

    @property
    def msg_id(self) -> str:
        return f"{self.job_id}:{self.attempt}:{self.seq}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> JobEvent:
        raw = _known_fields(cls, json.loads(data))
        result = raw.pop("result", None)
        error = raw.pop("error", None)
        return cls(
            **{**raw, "type": EventType(raw["type"])},
            result=ResultInfo(**_known_fields(ResultInfo, result)) if result else None,
            error=ErrorDetail(**_known_fields(ErrorDetail, error)) if error else None,
        )


@dataclass(frozen=True, slots=True)
class LanguageAdvert:
    code: str
    name: str
    genders: list[str]  # "female" | "male" | "neutral"


@dataclass(frozen=True, slots=True)
class WorkerAdvert:
    """What one live worker process can serve; stored in the workers KV bucket."""

    worker_id: str
    provider: str
    transcript_dubbing: bool
    media_dubbing: bool
    languages: list[LanguageAdvert]
    min_speed: float
    max_speed: float
    concurrency: int
    time: float

    @property
    def key(self) -> str:
        # KV keys allow only [-/_=.a-zA-Z0-9]. The digest keeps two worker ids
        # that sanitise alike ("a.b", "a_b") from overwriting each other.
        safe = "".join(
            c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in self.worker_id
        )
        digest = hashlib.sha256(self.worker_id.encode()).hexdigest()[:8]
        return f"{self.provider}.{safe}-{digest}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerAdvert:
        raw = _known_fields(cls, json.loads(data))
        langs = [
            LanguageAdvert(**_known_fields(LanguageAdvert, lang)) for lang in raw.pop("languages")
        ]
        return cls(**raw, languages=langs)
