"""The contract between the gateway and the workers on NATS JetStream.

Pure data and encode/decode functions, no I/O: ``dubbing.nats`` does the talking.

Streams, subjects and buckets::

    DUBBING_JOBS     work queue   dubbing.jobs.<kind>.<provider>   gateway outbox -> workers
    DUBBING_EVENTS   limits       dubbing.events.<job_id>          workers -> gateway
    DUBBING_LEASES   work queue   dubbing.leases.<worker>          workers -> gateway (renewals)
    dubbing.changes.<job_id>      core NATS, gateway -> gateways   "job changed, re-read it"
    dubbing.cancel.<job_id>       core NATS, gateway -> workers    "stop working on it" (StopNotice)
    KV  dubbing_workers           worker adverts (capabilities), expire unless refreshed
    KV  dubbing_cancelled         job ids cancelled by a client
    OBJ dubbing_results           result audio, one object per run of an attempt
    OBJ dubbing_requests          a job's request when it is too large to travel in its message
    OBJ dubbing_assets            uploaded files (background tracks), expire after max age

A job message is one attempt: it carries the serialized ``dubbing.v1.DubRequest``
(or, when that would not fit in one NATS message, the name of the object in
REQUESTS_BUCKET that holds it), and in headers the job id and the attempt number
the gateway's database issued for it. ``Nats-Msg-Id`` is ``<job_id>:<attempt>``,
so a re-published outbox row is dropped by the stream's duplicate window while
the next attempt is a new message.

A worker claims a message by storing its STARTED event, then acks it at once:
from then on the run lives on its lease in the database (renewed by
:class:`LeaseRenewal`), not on the message. Every run has its own ``run_id``,
because the bus can deliver one message twice (a worker that stalled before its
ack, a nats-server that lost its consumer state in a crash): the database lets
exactly one run per attempt report. Events are JSON so they stay readable with
``nats sub``; each carries (attempt, run_id, seq) so the gateway can apply them
idempotently, in order, and fenced by attempt and run.
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
LEASES_STREAM = "DUBBING_LEASES"
LEASES_SUBJECT_PREFIX = "dubbing.leases"
CHANGES_SUBJECT_PREFIX = "dubbing.changes"
CANCEL_SUBJECT_PREFIX = "dubbing.cancel"
WORKERS_BUCKET = "dubbing_workers"
CANCELLED_BUCKET = "dubbing_cancelled"
RESULTS_BUCKET = "dubbing_results"
ASSETS_BUCKET = "dubbing_assets"
REQUESTS_BUCKET = "dubbing_requests"
# Public asset names are "assets/<id>"; the object in ASSETS_BUCKET is named <id>.
ASSET_NAME_PREFIX = "assets/"
GATEWAY_EVENTS_CONSUMER = "gateway-events"
GATEWAY_LEASES_CONSUMER = "gateway-leases"

HEADER_JOB_ID = "Dubbing-Job-Id"
# The attempt this message is, as issued by the gateway's database (1, 2, ...).
HEADER_ATTEMPT = "Dubbing-Attempt"
# The job's attempt limit: the worker gives up on a transient error at the last one.
HEADER_MAX_ATTEMPTS = "Dubbing-Max-Attempts"
# Messages from gateways before attempts were issued by the database: the attempt
# was this base plus JetStream's delivery count.
HEADER_ATTEMPT_BASE = "Dubbing-Attempt-Base"
# Set when the request is in REQUESTS_BUCKET under this name (the payload is then empty).
HEADER_REQUEST_OBJECT = "Dubbing-Request-Object"
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


def lease_subject(worker_id: str) -> str:
    return f"{LEASES_SUBJECT_PREFIX}.{subject_token(worker_id)}"


def subject_token(text: str) -> str:
    """`text` as one subject token (and KV key): only [-_a-zA-Z0-9], plus a digest so
    that two names that sanitise alike ("a.b", "a_b") stay apart."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in text)
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def request_object_name(job_id: str) -> str:
    # One per job: every attempt carries the same request.
    return job_id


def result_object_name(job_id: str, attempt: int, run_id: str) -> str:
    # One object per run: neither a superseded attempt nor a second run of the
    # same attempt (a redelivered message) may overwrite the result the job points to.
    return f"{job_id}/attempt-{attempt}-{run_id}"


@dataclass(frozen=True, slots=True)
class JobMessage:
    """One attempt of a job on the work queue."""

    job_id: str
    kind: JobKind
    provider: str
    request: bytes  # serialized dubbing.v1.DubRequest; empty when request_object is set
    attempt: int = 1
    # 0: not said (an older gateway); the worker then uses its own setting.
    max_attempts: int = 0
    # The object in REQUESTS_BUCKET that holds the request, for one too large to inline.
    request_object: str = ""

    @property
    def subject(self) -> str:
        return job_subject(self.kind, self.provider)

    @property
    def msg_id(self) -> str:
        return f"{self.job_id}:{self.attempt}"

    def headers(self) -> dict[str, str]:
        headers = {
            HEADER_MSG_ID: self.msg_id,
            HEADER_JOB_ID: self.job_id,
            HEADER_ATTEMPT: str(self.attempt),
            HEADER_MAX_ATTEMPTS: str(self.max_attempts),
        }
        if self.request_object:
            headers[HEADER_REQUEST_OBJECT] = self.request_object
        return headers

    @classmethod
    def decode(
        cls,
        subject: str,
        headers: Mapping[str, str] | None,
        data: bytes,
        *,
        num_delivered: int = 1,
    ) -> JobMessage:
        """The message as published; `num_delivered` (JetStream's count) only numbers
        the attempt of a message from an older gateway that did not issue one."""
        headers = headers or {}
        parts = subject.split(".")
        if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != JOBS_SUBJECT_PREFIX:
            raise ValueError(f"not a job subject: {subject!r}")
        # Nats-Msg-Id is "<job_id>:<attempt>" (the bare job id from older gateways).
        job_id = headers.get(HEADER_JOB_ID) or headers.get(HEADER_MSG_ID, "").split(":", 1)[0]
        if not job_id:
            raise ValueError("job message without a job id header")
        if HEADER_ATTEMPT in headers:
            attempt = int(headers[HEADER_ATTEMPT])
        else:
            attempt = int(headers.get(HEADER_ATTEMPT_BASE, "0")) + num_delivered
        if attempt < 1:
            raise ValueError(f"job message with attempt {attempt}")
        return cls(
            job_id=job_id,
            kind=JobKind(parts[2]),
            provider=parts[3],
            request=data,
            attempt=attempt,
            max_attempts=int(headers.get(HEADER_MAX_ATTEMPTS, "0")),
            request_object=headers.get(HEADER_REQUEST_OBJECT, ""),
        )


class EventType(enum.StrEnum):
    STARTED = "started"  # an attempt began (job -> RUNNING)
    PROGRESS = "progress"  # stage/progress changed
    RETRYING = "retrying"  # the attempt failed transiently or was handed back (-> QUEUED)
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
    # A google.rpc.Code name (dubbing.errors.Code), e.g. "INVALID_ARGUMENT"; a str on
    # the wire, so a newer peer's reason or code still decodes.
    code: str
    reason: str  # UPPER_SNAKE (dubbing.errors.Reason), goes into ErrorInfo.reason
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What a worker reports about one attempt of one job."""

    job_id: str
    attempt: int
    seq: int  # 1, 2, ... within the run
    type: EventType
    worker_id: str
    time: float  # unix seconds
    # The run of the attempt ("" from workers before runs had ids).
    run_id: str = ""
    stage: str = ""
    progress: float = 0.0
    result: ResultInfo | None = None
    error: ErrorDetail | None = None
    generated_audio_seconds: float = 0.0
    characters: int = 0
    # RETRYING: how long the next attempt should wait, seconds.
    retry_after: float = 0.0

    @property
    def subject(self) -> str:
        return event_subject(self.job_id)

    @property
    def msg_id(self) -> str:
        return f"{self.job_id}:{self.attempt}:{self.run_id}:{self.seq}"

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
        # KV keys allow only [-/_=.a-zA-Z0-9].
        return f"{self.provider}.{subject_token(self.worker_id)}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerAdvert:
        raw = _known_fields(cls, json.loads(data))
        langs = [
            LanguageAdvert(**_known_fields(LanguageAdvert, lang)) for lang in raw.pop("languages")
        ]
        return cls(**raw, languages=langs)


@dataclass(frozen=True, slots=True)
class RunRef:
    """One run of one attempt of a job."""

    job_id: str
    attempt: int
    run_id: str


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """A worker's "still working on these", every third of the lease."""

    worker_id: str
    time: float  # unix seconds, as the worker sent it
    runs: list[RunRef]

    @property
    def subject(self) -> str:
        return lease_subject(self.worker_id)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaseRenewal:
        raw = _known_fields(cls, json.loads(data))
        runs = [RunRef(**_known_fields(RunRef, run)) for run in raw.pop("runs")]
        return cls(**raw, runs=runs)


@dataclass(frozen=True, slots=True)
class StopNotice:
    """What the gateway tells workers on ``dubbing.cancel.<job_id>``.

    An empty ``run_id`` is a client's CancelJob: every run of the job stops. A
    run id names one run that lost its attempt (superseded, or the job ended):
    it stops without reporting, since nothing it says would be applied.
    """

    run_id: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode() if self.run_id else b""

    @classmethod
    def decode(cls, data: bytes) -> StopNotice:
        if not data:
            return cls()
        return cls(**_known_fields(cls, json.loads(data)))
