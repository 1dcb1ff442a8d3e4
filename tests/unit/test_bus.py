"""The NATS contract (dubbing.bus): subjects, job messages, events and worker adverts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from dubbing import bus
from dubbing.bus import (
    ErrorDetail,
    EventType,
    JobEvent,
    JobKind,
    JobMessage,
    LanguageAdvert,
    ResultInfo,
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


@pytest.mark.parametrize("subject_of", [bus.event_subject, bus.change_subject, bus.cancel_subject])
def test_job_id_from_subject_inverts_the_per_job_subjects(
    subject_of: Callable[[str], str],
) -> None:
    assert bus.job_id_from_subject(subject_of(JOB_ID)) == JOB_ID


def test_job_id_from_subject_takes_the_last_token() -> None:
    assert bus.job_id_from_subject("dubbing.events.abc") == "abc"
    assert bus.job_id_from_subject("abc") == "abc"


def test_result_object_name_differs_per_attempt() -> None:
    names = {bus.result_object_name(JOB_ID, attempt) for attempt in range(1, 6)}
    assert len(names) == 5
    assert bus.result_object_name(JOB_ID, 1) == f"{JOB_ID}/attempt-1"
    assert bus.result_object_name(JOB_ID, 2) != bus.result_object_name(JOB_ID, 1)
    # Different jobs never share a name either.
    assert bus.result_object_name("other", 1) != bus.result_object_name(JOB_ID, 1)


# -- JobMessage -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(JobKind), ids=lambda k: k.value)
@pytest.mark.parametrize("attempt_base", [0, 1, 7])
def test_job_message_round_trips_through_subject_and_headers(
    kind: JobKind, attempt_base: int
) -> None:
    msg = JobMessage(
        job_id=JOB_ID,
        kind=kind,
        provider="elevenlabs",
        request=request_bytes(),
        attempt_base=attempt_base,
    )
    assert msg.subject == f"dubbing.jobs.{kind.value}.elevenlabs"
    headers = msg.headers()
    assert headers == {
        "Nats-Msg-Id": JOB_ID,
        "Dubbing-Job-Id": JOB_ID,
        "Dubbing-Attempt-Base": str(attempt_base),
    }
    # NATS headers are strings on the wire.
    assert all(isinstance(v, str) for v in headers.values())

    decoded = JobMessage.decode(msg.subject, headers, msg.request)

    assert decoded == msg
    assert decoded.job_id == JOB_ID
    assert decoded.kind is kind
    assert decoded.provider == "elevenlabs"
    assert decoded.attempt_base == attempt_base
    assert pb.DubRequest.FromString(decoded.request).target_language == "fr"


def test_job_message_without_attempt_base_header_starts_at_zero() -> None:
    decoded = JobMessage.decode("dubbing.jobs.transcript.local", {"Dubbing-Job-Id": JOB_ID}, b"")
    assert decoded.attempt_base == 0


def test_job_message_falls_back_to_the_msg_id_header() -> None:
    decoded = JobMessage.decode("dubbing.jobs.media.local", {"Nats-Msg-Id": JOB_ID}, b"")
    assert decoded.job_id == JOB_ID
    assert decoded.kind is JobKind.MEDIA


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
    [None, {}, {"Dubbing-Job-Id": ""}, {"Dubbing-Attempt-Base": "2"}],
    ids=["none", "empty", "blank-id", "only-attempt-base"],
)
def test_job_message_decode_rejects_a_missing_job_id(headers: dict[str, str] | None) -> None:
    with pytest.raises(ValueError, match="job id"):
        JobMessage.decode("dubbing.jobs.transcript.local", headers, b"")


# -- JobEvent ---------------------------------------------------------------------------


RESULT = ResultInfo(
    artifact=f"{JOB_ID}/attempt-2",
    format="opus",
    sample_rate_hz=48000,
    duration_seconds=3.25,
    size_bytes=4096,
    sha256="0f" * 32,
)


@pytest.mark.parametrize(
    "event",
    [
        JobEvent(JOB_ID, 1, 1, EventType.STARTED, "host-1", 1_700_000_000.123, stage="starting"),
        JobEvent(JOB_ID, 1, 2, EventType.PROGRESS, "host-1", 1_700_000_001.0, "mixing", 0.375),
        JobEvent(JOB_ID, 1, 3, EventType.RETRYING, "host-1", 1_700_000_002.0),
        JobEvent(
            JOB_ID,
            2,
            5,
            EventType.SUCCEEDED,
            "host-2",
            1_700_000_010.5,
            stage="done",
            progress=1.0,
            result=RESULT,
            generated_audio_seconds=3.25,
            characters=140,
        ),
        JobEvent(
            JOB_ID,
            2,
            4,
            EventType.FAILED,
            "host-2",
            1_700_000_003.0,
            error=ErrorDetail(
                code="INVALID_ARGUMENT",
                reason="LANGUAGE_NOT_SUPPORTED",
                message="no voice for 'xx' — sorry",
                metadata={"language": "xx", "provider": "local"},
            ),
        ),
        JobEvent(
            JOB_ID,
            3,
            1,
            EventType.FAILED,
            "host-3",
            1_700_000_004.0,
            error=ErrorDetail("INTERNAL", "INTERNAL", "boom"),
        ),
        JobEvent(JOB_ID, 3, 2, EventType.CANCELLED, "host-3", 1_700_000_005.0),
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
    event = JobEvent(
        JOB_ID,
        2,
        5,
        EventType.SUCCEEDED,
        "host-2",
        1_700_000_010.5,
        result=RESULT,
        generated_audio_seconds=3.25,
    )
    raw = json.loads(event.encode())
    assert raw["type"] == "succeeded"
    assert raw["job_id"] == JOB_ID
    assert raw["attempt"] == 2
    assert raw["seq"] == 5
    assert raw["result"]["format"] == "opus"
    assert raw["result"]["duration_seconds"] == 3.25
    assert raw["error"] is None


def test_job_event_decode_rejects_an_unknown_type() -> None:
    data = json.dumps(
        {"job_id": JOB_ID, "attempt": 1, "seq": 1, "type": "exploded", "worker_id": "w", "time": 0}
    ).encode()
    with pytest.raises(ValueError):
        JobEvent.decode(data)


def test_job_event_msg_id_and_subject() -> None:
    event = JobEvent(JOB_ID, 3, 12, EventType.PROGRESS, "w", 0.0)
    assert event.msg_id == f"{JOB_ID}:3:12"
    assert event.subject == f"dubbing.events.{JOB_ID}"
    assert bus.job_id_from_subject(event.subject) == JOB_ID


def test_job_event_msg_id_is_unique_per_attempt_and_seq() -> None:
    ids = {
        JobEvent(JOB_ID, attempt, seq, EventType.PROGRESS, "w", 0.0).msg_id
        for attempt in range(1, 4)
        for seq in range(1, 12)
    }
    assert len(ids) == 3 * 11


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
