"""The NATS contract (dubbing.bus): subjects, job messages, events, worker adverts, leases."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from dubbing import bus
from dubbing.bus import (
    ErrorDetail,
    EventType,
    JobEvent,
    JobKind,
    JobMessage,
    LanguageAdvert,
    LeaseRenewal,
    ResultInfo,
    RunRef,
    StopNotice,
    WorkerAdvert,
)
from dubbing.v1 import dubbing_pb2 as pb

JOB_ID = "0b7f3c9e-8a41-4e52-9c1d-2f6a5b8e7d10"
KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


def request_bytes() -> bytes:
    return pb.DubRequest(
        request_id="r-1", target_language="fr", provider="local"
    ).SerializeToString()


# -- subjects -------------------------------------------------------------------------


def test_subject_helpers() -> None:
    assert bus.job_subject(JobKind.TRANSCRIPT, "local") == "dubbing.jobs.transcript.local"
    assert bus.job_subject(JobKind.MEDIA, "elevenlabs") == "dubbing.jobs.media.elevenlabs"
    assert bus.event_subject(JOB_ID) == f"dubbing.events.{JOB_ID}"
    assert bus.change_subject(JOB_ID) == f"dubbing.changes.{JOB_ID}"
    assert bus.cancel_subject(JOB_ID) == f"dubbing.cancel.{JOB_ID}"
    assert bus.worker_consumer_name(JobKind.MEDIA, "minimax") == "workers-media-minimax"
    assert bus.lease_subject("w").startswith("dubbing.leases.")


@pytest.mark.parametrize("subject_of", [bus.event_subject, bus.change_subject, bus.cancel_subject])
def test_job_id_from_subject_inverts_the_per_job_subjects(
    subject_of: Callable[[str], str],
) -> None:
    assert bus.job_id_from_subject(subject_of(JOB_ID)) == JOB_ID


def test_job_id_from_subject_takes_the_last_token() -> None:
    assert bus.job_id_from_subject("dubbing.events.abc") == "abc"
    assert bus.job_id_from_subject("abc") == "abc"


def test_lease_subject_is_one_token_under_the_leases_prefix() -> None:
    assert bus.lease_subject("host-1_4242") == "dubbing.leases.host-1_4242-8f78b9c5"
    assert bus.lease_subject("a.b") == f"dubbing.leases.{bus.subject_token('a.b')}"


def test_result_object_name_differs_per_attempt_and_per_run() -> None:
    assert bus.result_object_name(JOB_ID, 1, "run-a") == f"{JOB_ID}/attempt-1-run-a"
    names = {
        bus.result_object_name(JOB_ID, attempt, run_id)
        for attempt in range(1, 6)
        for run_id in ("run-a", "run-b", "3ce1f0a2b4d6e8f0")
    }
    assert len(names) == 5 * 3
    # A second run of the same attempt (a redelivered message) writes elsewhere.
    assert bus.result_object_name(JOB_ID, 2, "x") != bus.result_object_name(JOB_ID, 2, "y")
    assert bus.result_object_name(JOB_ID, 2, "x") != bus.result_object_name(JOB_ID, 1, "x")
    # Different jobs never share a name either.
    assert bus.result_object_name("other", 1, "x") != bus.result_object_name(JOB_ID, 1, "x")
    assert all(name.startswith(f"{JOB_ID}/") for name in names)


# -- JobMessage -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda k: k.value)
@pytest.mark.parametrize(("attempt", "max_attempts"), [(1, 5), (2, 5), (7, 0)])
def test_job_message_round_trips_through_subject_and_headers(
    kind: JobKind, attempt: int, max_attempts: int
) -> None:
    msg = JobMessage(
        job_id=JOB_ID,
        kind=kind,
        provider="elevenlabs",
        request=request_bytes(),
        attempt=attempt,
        max_attempts=max_attempts,
    )
    assert msg.subject == f"dubbing.jobs.{kind.value}.elevenlabs"
    assert msg.msg_id == f"{JOB_ID}:{attempt}"
    headers = msg.headers()
    assert headers == {
        "Nats-Msg-Id": f"{JOB_ID}:{attempt}",
        "Dubbing-Job-Id": JOB_ID,
        "Dubbing-Attempt": str(attempt),
        "Dubbing-Max-Attempts": str(max_attempts),
    }
    # NATS headers are strings on the wire.
    assert all(isinstance(v, str) for v in headers.values())

    decoded = JobMessage.decode(msg.subject, headers, msg.request)

    assert decoded == msg
    assert decoded.job_id == JOB_ID
    assert decoded.kind is kind
    assert decoded.provider == "elevenlabs"
    assert decoded.attempt == attempt
    assert decoded.max_attempts == max_attempts
    assert pb.DubRequest.FromString(decoded.request).target_language == "fr"


def test_job_message_defaults_to_the_first_attempt_with_no_limit_said() -> None:
    msg = JobMessage(JOB_ID, JobKind.TRANSCRIPT, "local", b"")
    assert (msg.attempt, msg.max_attempts) == (1, 0)


@pytest.mark.parametrize("num_delivered", [1, 2, 9])
def test_an_issued_attempt_does_not_depend_on_the_delivery_count(num_delivered: int) -> None:
    headers = {"Dubbing-Job-Id": JOB_ID, "Dubbing-Attempt": "3", "Dubbing-Max-Attempts": "5"}
    decoded = JobMessage.decode(
        "dubbing.jobs.media.local", headers, b"", num_delivered=num_delivered
    )
    assert (decoded.attempt, decoded.max_attempts) == (3, 5)


def test_an_issued_attempt_wins_over_a_legacy_attempt_base() -> None:
    headers = {"Dubbing-Job-Id": JOB_ID, "Dubbing-Attempt": "2", "Dubbing-Attempt-Base": "6"}
    decoded = JobMessage.decode("dubbing.jobs.media.local", headers, b"", num_delivered=3)
    assert decoded.attempt == 2


@pytest.mark.parametrize(
    ("base", "num_delivered", "attempt"),
    [(None, 1, 1), (None, 3, 3), ("0", 1, 1), ("0", 2, 2), ("2", 1, 3), ("7", 2, 9)],
)
def test_a_message_from_an_older_gateway_numbers_its_attempt_by_deliveries(
    base: str | None, num_delivered: int, attempt: int
) -> None:
    """Before the database issued attempts: base + JetStream's delivery count."""
    headers = {"Nats-Msg-Id": JOB_ID, "Dubbing-Job-Id": JOB_ID}
    if base is not None:
        headers["Dubbing-Attempt-Base"] = base
    decoded = JobMessage.decode(
        "dubbing.jobs.transcript.local", headers, request_bytes(), num_delivered=num_delivered
    )
    assert decoded.attempt == attempt
    assert decoded.max_attempts == 0  # not said: the worker uses its own setting
    assert decoded.job_id == JOB_ID
    assert decoded.request == request_bytes()


def test_a_legacy_message_counts_one_delivery_by_default() -> None:
    decoded = JobMessage.decode("dubbing.jobs.transcript.local", {"Dubbing-Job-Id": JOB_ID}, b"")
    assert decoded.attempt == 1


@pytest.mark.parametrize(
    ("headers", "num_delivered"),
    [
        ({"Dubbing-Attempt": "0"}, 1),
        ({"Dubbing-Attempt": "-1"}, 1),
        ({"Dubbing-Attempt": "0", "Dubbing-Attempt-Base": "4"}, 1),
        ({"Dubbing-Attempt-Base": "0"}, 0),
        ({"Dubbing-Attempt-Base": "-3"}, 1),
        ({}, 0),
    ],
    ids=["zero", "negative", "zero-despite-base", "legacy-zero", "legacy-negative", "nothing"],
)
def test_job_message_decode_rejects_an_attempt_below_one(
    headers: dict[str, str], num_delivered: int
) -> None:
    with pytest.raises(ValueError, match="attempt"):
        JobMessage.decode(
            "dubbing.jobs.transcript.local",
            {"Dubbing-Job-Id": JOB_ID, **headers},
            b"",
            num_delivered=num_delivered,
        )


def test_job_message_msg_id_is_unique_per_job_and_attempt() -> None:
    ids = {
        JobMessage(job_id, JobKind.MEDIA, "local", b"", attempt=attempt).msg_id
        for job_id in (JOB_ID, "other")
        for attempt in range(1, 6)
    }
    assert len(ids) == 2 * 5
    # A re-published outbox row of the same attempt is the same message.
    assert (
        JobMessage(JOB_ID, JobKind.MEDIA, "local", b"x", attempt=2).msg_id
        == JobMessage(JOB_ID, JobKind.MEDIA, "local", b"x", attempt=2, max_attempts=5).msg_id
    )


def test_job_message_falls_back_to_the_msg_id_header() -> None:
    # An older gateway's Nats-Msg-Id was the job id itself.
    decoded = JobMessage.decode("dubbing.jobs.media.local", {"Nats-Msg-Id": JOB_ID}, b"")
    assert decoded.job_id == JOB_ID
    assert decoded.kind is JobKind.MEDIA
    # This version's is "<job_id>:<attempt>".
    headers = {"Nats-Msg-Id": f"{JOB_ID}:2", "Dubbing-Attempt": "2"}
    decoded = JobMessage.decode("dubbing.jobs.media.local", headers, b"")
    assert (decoded.job_id, decoded.attempt) == (JOB_ID, 2)


@pytest.mark.parametrize(
    "subject",
    [
        f"dubbing.events.{JOB_ID}",
        "dubbing.events.transcript.local",
        "dubbing.jobs.transcript",
        "dubbing.jobs.transcript.local.extra",
        "other.jobs.transcript.local",
        "dubbing.cancel.transcript.local",
        "",
    ],
)
def test_job_message_decode_rejects_a_non_job_subject(subject: str) -> None:
    with pytest.raises(ValueError, match="not a job subject"):
        JobMessage.decode(subject, {"Dubbing-Job-Id": JOB_ID}, b"")


def test_job_message_decode_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        JobMessage.decode("dubbing.jobs.video.local", {"Dubbing-Job-Id": JOB_ID}, b"")


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"Dubbing-Job-Id": ""},
        {"Dubbing-Attempt-Base": "2"},
        {"Dubbing-Attempt": "2", "Dubbing-Max-Attempts": "5"},
    ],
    ids=["none", "empty", "blank-id", "only-attempt-base", "only-attempt"],
)
def test_job_message_decode_rejects_a_missing_job_id(headers: dict[str, str] | None) -> None:
    with pytest.raises(ValueError, match="job id"):
        JobMessage.decode("dubbing.jobs.transcript.local", headers, b"")


# -- JobEvent ---------------------------------------------------------------------------


RESULT = ResultInfo(
    artifact=bus.result_object_name(JOB_ID, 2, "run-b"),
    format="opus",
    sample_rate_hz=48000,
    duration_seconds=3.25,
    size_bytes=4096,
    sha256="0f" * 32,
)
T = 1_700_000_000.0


def ev(attempt: int, seq: int, type: EventType, **kw: object) -> JobEvent:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "attempt": attempt,
        "seq": seq,
        "type": type,
        "worker_id": f"host-{attempt}",
        "time": T + seq,
        "run_id": f"run-{attempt}",
        **kw,
    }
    return JobEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        ev(1, 1, EventType.STARTED, stage="starting", time=T + 0.123),
        ev(1, 2, EventType.PROGRESS, stage="mixing", progress=0.375),
        ev(1, 3, EventType.RETRYING, retry_after=2.5),
        ev(1, 4, EventType.RETRYING, error=ErrorDetail("UNAVAILABLE", "PROVIDER_ERROR", "busy")),
        ev(
            2,
            5,
            EventType.SUCCEEDED,
            time=T + 10.5,
            stage="done",
            progress=1.0,
            result=RESULT,
            generated_audio_seconds=3.25,
            characters=140,
        ),
        ev(
            2,
            4,
            EventType.FAILED,
            error=ErrorDetail(
                code="INVALID_ARGUMENT",
                reason="LANGUAGE_NOT_SUPPORTED",
                message="no voice for 'xx' — sorry",
                metadata={"language": "xx", "provider": "local"},
            ),
        ),
        ev(3, 1, EventType.FAILED, error=ErrorDetail("INTERNAL", "INTERNAL", "boom")),
        ev(3, 2, EventType.CANCELLED),
        # A worker from before runs had ids.
        ev(3, 3, EventType.PROGRESS, run_id="", progress=0.5),
    ],
    ids=lambda e: f"{e.type.value}-{e.attempt}-{e.seq}",
)
def test_job_event_round_trip(event: JobEvent) -> None:
    data = event.encode()
    assert isinstance(data, bytes)
    decoded = JobEvent.decode(data)

    assert decoded == event
    assert decoded.type is event.type
    assert type(decoded.result) is type(event.result)
    assert type(decoded.error) is type(event.error)
    # Re-encoding is stable.
    assert decoded.encode() == data


def test_job_event_encoding_is_readable_json() -> None:
    event = ev(2, 5, EventType.SUCCEEDED, result=RESULT, generated_audio_seconds=3.25)
    raw = json.loads(event.encode())
    assert raw["type"] == "succeeded"
    assert raw["job_id"] == JOB_ID
    assert raw["attempt"] == 2
    assert raw["run_id"] == "run-2"
    assert raw["seq"] == 5
    assert raw["retry_after"] == 0.0
    assert raw["result"]["format"] == "opus"
    assert raw["result"]["duration_seconds"] == 3.25
    assert raw["error"] is None


def test_job_event_from_a_worker_before_runs_and_backoffs() -> None:
    data = json.dumps(
        {
            "job_id": JOB_ID,
            "attempt": 2,
            "seq": 3,
            "type": "retrying",
            "worker_id": "w",
            "time": T,
            "stage": "",
            "progress": 0.0,
            "result": None,
            "error": None,
            "generated_audio_seconds": 0.0,
            "characters": 0,
        }
    ).encode()
    decoded = JobEvent.decode(data)
    assert decoded == JobEvent(JOB_ID, 2, 3, EventType.RETRYING, "w", T)
    assert (decoded.run_id, decoded.retry_after) == ("", 0.0)


def test_job_event_decode_ignores_fields_it_does_not_know() -> None:
    event = ev(
        2,
        5,
        EventType.FAILED,
        error=ErrorDetail("UNAVAILABLE", "PROVIDER_ERROR", "x", {"k": "v"}),
        retry_after=4.0,
    )
    raw = json.loads(event.encode())
    raw["lease_hint"] = 12
    raw["error"]["retryable"] = True
    newer = json.loads(ev(2, 6, EventType.SUCCEEDED, result=RESULT).encode())
    newer["result"]["bitrate"] = 96000
    newer["host"] = {"name": "h"}

    assert JobEvent.decode(json.dumps(raw).encode()) == event
    assert JobEvent.decode(json.dumps(newer).encode()) == ev(
        2, 6, EventType.SUCCEEDED, result=RESULT
    )


def test_job_event_decode_rejects_an_unknown_type() -> None:
    data = json.dumps(
        {"job_id": JOB_ID, "attempt": 1, "seq": 1, "type": "exploded", "worker_id": "w", "time": 0}
    ).encode()
    with pytest.raises(ValueError):
        JobEvent.decode(data)


def test_job_event_msg_id_and_subject() -> None:
    event = JobEvent(JOB_ID, 3, 12, EventType.PROGRESS, "w", 0.0, run_id="run-x")
    assert event.msg_id == f"{JOB_ID}:3:run-x:12"
    assert replace(event, run_id="").msg_id == f"{JOB_ID}:3::12"
    assert event.subject == f"dubbing.events.{JOB_ID}"
    assert bus.job_id_from_subject(event.subject) == JOB_ID


def test_job_event_msg_id_is_unique_per_attempt_run_and_seq() -> None:
    ids = {
        JobEvent(JOB_ID, attempt, seq, EventType.PROGRESS, "w", 0.0, run_id=run_id).msg_id
        for attempt in range(1, 4)
        for run_id in ("run-a", "run-b", "")
        for seq in range(1, 12)
    }
    assert len(ids) == 3 * 3 * 11


def test_terminal_events() -> None:
    assert {EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED} == bus.TERMINAL_EVENTS


# -- WorkerAdvert -----------------------------------------------------------------------


def advert(worker_id: str = "host-1-4242", provider: str = "local") -> WorkerAdvert:
    return WorkerAdvert(
        worker_id=worker_id,
        provider=provider,
        transcript_dubbing=True,
        media_dubbing=False,
        languages=[
            LanguageAdvert("fr", "French", ["female", "male"]),
            LanguageAdvert("pt-BR", "Portuguese (Brazil)", ["neutral"]),
        ],
        min_speed=0.5,
        max_speed=2.0,
        concurrency=4,
        time=1_700_000_000.25,
    )


def test_worker_advert_round_trip() -> None:
    ad = advert()
    decoded = WorkerAdvert.decode(ad.encode())
    assert decoded == ad
    assert all(isinstance(lang, LanguageAdvert) for lang in decoded.languages)
    assert decoded.languages[1].genders == ["neutral"]
    assert decoded.encode() == ad.encode()


def test_worker_advert_with_no_languages_round_trips() -> None:
    ad = WorkerAdvert("w", "minimax", False, True, [], 1.0, 1.0, 1, 0.0)
    assert WorkerAdvert.decode(ad.encode()) == ad


def test_worker_advert_key_of_a_plain_id() -> None:
    # Readable worker id, then a digest of the exact id.
    assert re.fullmatch(r"local\.host-1_4242-[0-9a-f]{8}", advert("host-1_4242").key)


@pytest.mark.parametrize(
    ("worker_id", "key"),
    [
        ("host-1_4242", "local.host-1_4242-8f78b9c5"),
        ("a.b", "local.a_b-2e7336dc"),
        ("a_b", "local.a_b-648fa9b3"),
        ("héllo", "local.h_llo-3c48591d"),
    ],
)
def test_worker_advert_key_is_unchanged_by_subject_token(worker_id: str, key: str) -> None:
    """The keys live workers already wrote (before subject_token) stay the same."""
    assert advert(worker_id).key == key == f"local.{bus.subject_token(worker_id)}"


@pytest.mark.parametrize("worker_id", ["héllo", "pod-٣", "\uff48ost"])
def test_worker_advert_key_is_ascii_for_unicode_ids(worker_id: str) -> None:
    assert KV_KEY.match(advert(worker_id).key)


def test_worker_advert_keys_of_ids_that_sanitise_alike_differ() -> None:
    assert advert("a.b").key != advert("a_b").key


@pytest.mark.parametrize(
    "worker_id",
    [
        "host.example.com-4242",
        "host:4242",
        "my host 4242",
        "pod.ns.svc.cluster.local:8080 #2",
        "a/b=c*d>e",
        "  ",
        "...",
    ],
)
def test_worker_advert_key_is_a_valid_kv_key(worker_id: str) -> None:
    key = advert(worker_id, provider="elevenlabs").key
    assert KV_KEY.match(key), key
    assert key.startswith("elevenlabs.")
    worker_part = key.removeprefix("elevenlabs.")
    # The worker part is one KV token: no dots, wildcards or separators of its own.
    assert len(worker_part) == len(worker_id) + 9  # "-" and an 8-digit digest
    assert re.fullmatch(r"[-_a-zA-Z0-9]+", worker_part), worker_part


def test_worker_advert_key_separates_providers() -> None:
    assert advert("host-1", "local").key != advert("host-1", "minimax").key


# -- leases and stop notices ------------------------------------------------------------------

NATS_TOKEN = re.compile(r"^[-_a-zA-Z0-9]+$")
AWKWARD_IDS = [
    "host-1_4242",
    "host.example.com-4242",
    "host:4242",
    "my host 4242",
    "pod.ns.svc.cluster.local:8080 #2",
    "a/b=c*d>e",
    "*",
    ">",
    "  ",
    "...",
    "",
    "héllo",
    "pod-٣",
    "\uff48ost",
]


@pytest.mark.parametrize("text", AWKWARD_IDS)
def test_subject_token_is_one_valid_nats_token(text: str) -> None:
    token = bus.subject_token(text)
    # No dots, wildcards or whitespace, never empty; ASCII only.
    assert NATS_TOKEN.match(token), token
    assert token == bus.subject_token(text)  # stable: the same worker, the same subject
    subject = bus.lease_subject(text)
    assert subject == f"dubbing.leases.{token}"
    assert subject.split(".") == ["dubbing", "leases", token]
    assert KV_KEY.match(token)


@pytest.mark.parametrize(
    ("a", "b"),
    [("a.b", "a_b"), ("a b", "a_b"), ("a*", "a>"), ("é", "_"), ("x.y.z", "x_y_z"), ("", "_")],
)
def test_subject_tokens_of_ids_that_sanitise_alike_differ(a: str, b: str) -> None:
    assert bus.subject_token(a) != bus.subject_token(b)
    assert bus.lease_subject(a) != bus.lease_subject(b)


def test_all_awkward_ids_get_distinct_tokens() -> None:
    assert len({bus.subject_token(t) for t in AWKWARD_IDS}) == len(AWKWARD_IDS)


def renewal() -> LeaseRenewal:
    return LeaseRenewal(
        worker_id="host.example.com:4242",
        time=1_700_000_000.25,
        runs=[RunRef(JOB_ID, 1, "3ce1f0a2b4d6e8f0"), RunRef("other-job", 4, "run-b")],
    )


def test_lease_renewal_round_trip() -> None:
    lr = renewal()
    data = lr.encode()
    decoded = LeaseRenewal.decode(data)
    assert decoded == lr
    assert all(isinstance(run, RunRef) for run in decoded.runs)
    assert decoded.encode() == data
    assert lr.subject == bus.lease_subject("host.example.com:4242")


def test_lease_renewal_with_no_runs_round_trips() -> None:
    lr = LeaseRenewal("w", 0.0, [])
    assert LeaseRenewal.decode(lr.encode()) == lr


def test_lease_renewal_encoding_is_readable_json() -> None:
    raw = json.loads(renewal().encode())
    assert raw == {
        "worker_id": "host.example.com:4242",
        "time": 1_700_000_000.25,
        "runs": [
            {"job_id": JOB_ID, "attempt": 1, "run_id": "3ce1f0a2b4d6e8f0"},
            {"job_id": "other-job", "attempt": 4, "run_id": "run-b"},
        ],
    }


def test_lease_renewal_decode_ignores_fields_it_does_not_know() -> None:
    raw = json.loads(renewal().encode())
    raw["capacity"] = 3
    raw["runs"][0]["progress"] = 0.5
    assert LeaseRenewal.decode(json.dumps(raw).encode()) == renewal()


def test_stop_notice_for_every_run_is_an_empty_payload() -> None:
    # What a client's CancelJob sends, as gateways before StopNotice did.
    assert StopNotice().encode() == b""
    assert StopNotice.decode(b"") == StopNotice()
    assert StopNotice.decode(b"").run_id == ""


@pytest.mark.parametrize("run_id", ["3ce1f0a2b4d6e8f0", "run-a"])
def test_stop_notice_for_one_run_round_trips(run_id: str) -> None:
    notice = StopNotice(run_id)
    data = notice.encode()
    assert json.loads(data) == {"run_id": run_id}
    assert StopNotice.decode(data) == notice


def test_stop_notice_decode_ignores_fields_it_does_not_know() -> None:
    data = json.dumps({"run_id": "run-a", "why": "stale_attempt"}).encode()
    assert StopNotice.decode(data) == StopNotice("run-a")
