"""Validation of a ``DubRequest`` before the gateway persists it, and its idempotency hash.

:func:`validate_dub_request` checks syntax and limits only. Whether a live worker
serves the provider, the language or media dubbing is decided elsewhere at run time
(FAILED_PRECONDITION), and URLs are not fetched here. It collects every violation,
not just the first, as ``(field path, description)`` pairs whose paths follow
AIP-193 relative to ``SubmitDubRequest``, e.g.
``request.transcript.script.segments[3].end``. Map entries use the AIP-161
form ``request.labels.key`` (backticks around keys that are not identifiers). At
most :data:`MAX_VIOLATIONS` pairs are returned: when more were found, the last one
says how many were left out (field ``request``).

Limits (the first six come from :class:`Limits`; the gateway takes
``max_segments`` and ``max_characters`` from ``DUBBING_MAX_SEGMENTS`` and
``DUBBING_MAX_CHARACTERS``):

==============================================  =========================================
What                                            Limit
==============================================  =========================================
The request, serialized with its segments       what the bus carries in a message, less
                                                4 KiB (1 MiB - 4 KiB with NATS's default
                                                max_payload), and at most 3 MiB
Segments per transcript                         1 .. 5,000
Characters per transcript (sum of ``text``)     500,000 (Unicode code points)
Characters per segment ``text``                 5,000; at least one visible character,
                                                no control characters (tab and line
                                                breaks aside)
Segment window                                  0 <= start < end <= 6 h (21,600 s);
                                                ordered by start, not overlapping
                                                (a segment may start where the last ends)
Labels                                          64; key ``^[a-z][a-z0-9_-]{0,62}$``;
                                                value <= 256 characters
``auto_delete_after_hours``                     0 (keep) .. 8,760 (365 days)
``request_id``                                  optional; <= 128 of ``[A-Za-z0-9._:-]``
``target_language``                             required BCP-47 tag (RFC 5646 ``langtag``
                                                syntax), <= 64 characters
``source_language``                             empty, ``auto`` or a BCP-47 tag
``provider``                                    empty (= ``local``), ``local``,
                                                ``elevenlabs`` or ``minimax``
URLs                                            absolute ``http``/``https`` with a host,
                                                <= 2,048 characters, no whitespace
``voice.voice_id``                              <= 256 characters
``segment.speaker``                             <= 128 characters
``voice`` clone URLs                            at most one of audio and video
``voice.settings``                              stability, similarity_boost, style in
                                                [0, 1]; speed in [0.5, 2]; pitch in
                                                [-12, 12]; volume in (0, 10]; emotion
                                                empty or one of happy, sad, angry,
                                                fearful, disgusted, surprised, calm,
                                                fluent, whisper
``timing.max_stretch_ratio``                    0 (service default, 1.25) or 1.0 .. 1.4
``output.sample_rate_hz``                       0 (= 24,000) or 8,000, 16,000, 22,050,
                                                24,000, 32,000, 44,100, 48,000
``output.loudness_lufs``                        0 (= -16) or -36 .. -14
``output.channels``                             0 (as the background), 1 or 2
``background``                                  optional; exactly one of ``url`` (as URLs
                                                above) or ``asset`` (``assets/`` and 32
                                                lowercase hex digits)
``background.gain_db``                          finite, -60 .. 20
``background.ducking_db``                       unset (= 12) or finite, 0 .. 40
Enum fields (gender, format, mode)              a value the API defines
``media.start_time`` / ``end_time``             whole seconds, 0 <= start < end <= 6 h
``media.num_speakers``                          0 (detect) .. 32
``media.target_accent``                         <= 64 characters
``media`` manual mode                           requires ``csv_url``; ``csv_url``,
                                                ``foreground_audio_url``,
                                                ``background_audio_url`` and ``csv_fps``
                                                only in manual mode
``media.csv_fps``                               0 (infer) or (0, 240]
==============================================  =========================================

Durations must also be well-formed protobuf Durations (nanos within +-999,999,999
and of the same sign as seconds).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from google.protobuf import duration_pb2

from dubbing import bus, limits, transcripts
from dubbing.v1 import dubbing_pb2 as pb

if TYPE_CHECKING:
    from dubbing.settings import GatewaySettings

__all__ = [
    "ASSET_NAME",
    "JOB_ID",
    "KNOWN_PROVIDERS",
    "MAX_VIOLATIONS",
    "MINIMAX_EMOTIONS",
    "SAMPLE_RATES_HZ",
    "Limits",
    "job_id_problem",
    "language_tag_problem",
    "request_hash",
    "validate_dub_request",
    "validate_list_request",
    "validate_submit_request",
]

MAX_VIOLATIONS = 50

MAX_REQUEST_BYTES = 3 * 1024 * 1024

KNOWN_PROVIDERS = frozenset({"local", "elevenlabs", "minimax"})
MINIMAX_EMOTIONS = frozenset(
    {"happy", "sad", "angry", "fearful", "disgusted", "surprised", "calm", "fluent", "whisper"}
)
SAMPLE_RATES_HZ = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})

MAX_REQUEST_ID_LENGTH = 128
MAX_LABEL_VALUE_LENGTH = 256
MAX_LANGUAGE_TAG_LENGTH = 64
MAX_URL_LENGTH = 2048
MAX_VOICE_ID_LENGTH = 256
MAX_SPEAKER_LENGTH = 128
MAX_TARGET_ACCENT_LENGTH = 64
MAX_NUM_SPEAKERS = 32
MIN_SPEED, MAX_SPEED = 0.5, 2.0
MIN_PITCH, MAX_PITCH = -12, 12
MAX_VOLUME = 10.0
# The timing engine's hard limit (dubbing.limits): a request asking for more is
# refused rather than silently capped.
MIN_STRETCH_RATIO, MAX_STRETCH_RATIO = 1.0, limits.MAX_STRETCH_RATIO
# Integrated loudness targets: quieter than -36 LUFS is barely audible speech; -14 is
# the loudest streaming norm, and louder speech needs more limiting than it can take.
MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS = -36.0, -14.0
MIN_BACKGROUND_GAIN_DB, MAX_BACKGROUND_GAIN_DB = -60.0, 20.0
MIN_DUCKING_DB, MAX_DUCKING_DB = 0.0, 40.0
# The names UploadAsset gives: the prefix and a uuid4 in hex (gateway.assets).
ASSET_NAME = re.compile(re.escape(bus.ASSET_NAME_PREFIX) + r"[0-9a-f]{32}", re.ASCII)
# The job ids the gateway gives (gateway.store.ids.new_job_id; a test keeps the two in
# step): UUIDs in their canonical lowercase form.
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)

_NANOS_PER_SECOND = 1_000_000_000
_MAX_NANOS = 999_999_999
# google.protobuf.Duration's documented range: +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+", re.ASCII)
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}", re.ASCII)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*", re.ASCII)
_MAX_ECHOED_KEY_LENGTH = 128

# RFC 5646 section 2.1, the `langtag` production (case-insensitive):
#   language ["-" script] ["-" region] *("-" variant) *("-" extension) ["-" privateuse]
# A tag that is only private use ("x-...") or grandfathered ("i-klingon") is refused.
_LANGTAG = re.compile(
    r"""
    (?:[a-z]{2,3}(?:-[a-z]{3}){0,3} | [a-z]{4} | [a-z]{5,8})    # language [-extlang]
    (?:-[a-z]{4})?                                              # script
    (?:-(?:[a-z]{2}|[0-9]{3}))?                                 # region
    (?P<variants>(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*)      # variants
    (?P<extensions>(?:-[0-9a-wyz](?:-[a-z0-9]{2,8})+)*)         # extensions
    (?:-x(?:-[a-z0-9]{1,8})+)?                                  # private use
    """,
    re.ASCII | re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of one request; see the module docstring for every rule."""

    max_segments: int = 5000
    max_characters: int = 500_000
    max_segment_characters: int = 5000
    max_labels: int = 64
    max_auto_delete_hours: int = 24 * 365
    max_programme_seconds: float = limits.MAX_PROGRAMME_SECONDS
    # The request serialized, its segments included (the other limits allow ~4.8 MB:
    # 5,000 speakers of 128 four-byte characters, 500,000 four-byte characters of
    # text). A job (its request plus a timing report of up to ~0.6 MB) must fit in
    # the 4 MiB a default gRPC client receives, or GetJob and WatchJob could not
    # return it. The bus is no limit: a request too large for one NATS message
    # travels through the requests bucket (gateway.outbox).
    max_request_bytes: int = MAX_REQUEST_BYTES

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Limits:
        """Defaults, with the transcript size limits the gateway is configured with."""
        return cls(max_segments=settings.max_segments, max_characters=settings.max_characters)


def validate_submit_request(
    req: pb.SubmitDubRequest, limits: Limits, *, max_violations: int = MAX_VIOLATIONS
) -> list[tuple[str, str]]:
    """Violations of a SubmitDubRequest: its ``request`` must be set and valid."""
    if not req.HasField("request"):
        return [("request", "is required")]
    return validate_dub_request(req.request, limits, max_violations=max_violations)


def validate_dub_request(
    req: pb.DubRequest, limits: Limits, *, max_violations: int = MAX_VIOLATIONS
) -> list[tuple[str, str]]:
    """Every ``(field path, description)`` violated by `req`; empty when it is valid."""
    out = _Violations(max_violations)
    _check_request_id(req.request_id, out)
    _check_languages(req, out)
    if req.provider and req.provider not in KNOWN_PROVIDERS:
        out.add(
            "request.provider",
            f"unknown provider {_show(req.provider)}; use one of "
            f"{', '.join(sorted(KNOWN_PROVIDERS))}, or leave it empty for local",
        )
    work = req.WhichOneof("work")
    if work is None:
        out.add("request.work", "one of transcript or media is required")
    elif work == "transcript":
        _check_transcript_dubbing(req.transcript, limits, out)
    else:
        _check_media(req.media, limits, out)
    _check_labels(req.labels, limits, out)
    if not 0 <= req.auto_delete_after_hours <= limits.max_auto_delete_hours:
        out.add(
            "request.auto_delete_after_hours",
            f"must be between 0 (keep) and {limits.max_auto_delete_hours}",
        )
    size = req.ByteSize()
    if size > limits.max_request_bytes:
        out.add(
            "request",
            f"is {size:,} bytes with its segments; at most {limits.max_request_bytes:,} "
            "(fewer or shorter segments, speakers or labels)",
        )
    return out.result()


def validate_list_request(req: pb.ListJobsRequest) -> list[tuple[str, str]]:
    """Violations of a ListJobsRequest's ``states`` and ``view``: each a value the API
    defines (not STATE_UNSPECIFIED, which no job is in). ``page_size`` and ``page_token``
    are :mod:`gateway.pagination`'s."""
    out = _Violations(MAX_VIOLATIONS)
    for i, state in enumerate(req.states):
        if state == pb.Job.State.STATE_UNSPECIFIED or state not in pb.Job.State.values():
            out.add(f"states[{i}]", f"unknown state {state}; use one of {_STATE_NAMES}")
    if req.view not in pb.JobView.values():
        out.add(
            "view", f"unknown view {req.view}; use JOB_VIEW_BASIC (the default) or JOB_VIEW_FULL"
        )
    return out.result()


_STATE_NAMES = ", ".join(
    name for name, number in pb.Job.State.items() if number != pb.Job.State.STATE_UNSPECIFIED
)


def request_hash(req: pb.DubRequest) -> str:
    """SHA-256 (hex) of a canonical form of `req`, to tell an idempotent retry from a reuse.

    The canonical form is protobuf's deterministic serialization (fields in number
    order, map entries sorted), so the same parameters always hash the same however
    the message was built, and every field counts, ``request_id`` included. It is
    on SubmitDub's hot path: this costs a few microseconds where a JSON canonical
    form cost a tenth of the gateway's CPU. Unknown fields are dropped first, so a
    newer client's extra fields do not make a retry look different.
    """
    canonical = _without_unknown_fields(req).SerializeToString(deterministic=True)
    return hashlib.sha256(b"dubbing.v1.DubRequest/binary/1\n" + canonical).hexdigest()


def _without_unknown_fields(req: pb.DubRequest) -> pb.DubRequest:
    copy = pb.DubRequest()
    copy.CopyFrom(req)
    copy.DiscardUnknownFields()
    return copy


def job_id_problem(job_id: str) -> str | None:
    """Why `job_id` cannot be a job's id (GetJob, CancelJob...), or None when it can be.

    Checked before any lookup, so that an id that cannot exist is INVALID_ARGUMENT rather
    than NOT_FOUND, and only a short, well-formed id is ever echoed in an error.
    """
    if not job_id:
        return "must not be empty"
    if not JOB_ID.fullmatch(job_id):
        return (
            "is not a job id: use the id SubmitDub returned, a lowercase UUID "
            'such as "01a2b3c4-d5e6-7f80-9a1b-2c3d4e5f6a7b"'
        )
    return None


def language_tag_problem(tag: str) -> str | None:
    """Why `tag` is not a well-formed BCP-47 language tag, or None when it is."""
    if len(tag) > MAX_LANGUAGE_TAG_LENGTH:
        return f"must be at most {MAX_LANGUAGE_TAG_LENGTH} characters"
    match = _LANGTAG.fullmatch(tag)
    if match is None:
        return (
            f"{_show(tag)} is not a well-formed BCP-47 language tag "
            '(e.g. "fr", "pt-BR", "zh-Hant-TW"; subtags are separated by "-")'
        )
    variants = match.group("variants").lower().split("-")[1:]
    if len(set(variants)) != len(variants):
        return f"{_show(tag)} repeats a variant subtag"
    singletons = [s for s in match.group("extensions").lower().split("-")[1:] if len(s) == 1]
    if len(set(singletons)) != len(singletons):
        return f"{_show(tag)} repeats an extension singleton"
    return None


# ---------------------------------------------------------------------------


class _Violations:
    def __init__(self, cap: int) -> None:
        self._cap = max(cap, 1)
        self._items: list[tuple[str, str]] = []
        self._found = 0

    def add(self, field: str, description: str) -> None:
        self._found += 1
        if len(self._items) < self._cap:
            self._items.append((field, description))

    def result(self) -> list[tuple[str, str]]:
        if self._found <= self._cap:
            return list(self._items)
        kept = self._items[: self._cap - 1]
        omitted = self._found - len(kept)
        return [*kept, ("request", f"{omitted} more violations are not listed")]


def _show(value: str, limit: int = 40) -> str:
    """`value` quoted for a description, shortened so that errors stay small."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return json.dumps(value)


def _check_request_id(request_id: str, out: _Violations) -> None:
    if not request_id:
        return
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        out.add("request.request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    elif not _REQUEST_ID.fullmatch(request_id):
        out.add(
            "request.request_id",
            "may contain only letters, digits and . _ : - (a UUID is recommended)",
        )


def _check_languages(req: pb.DubRequest, out: _Violations) -> None:
    if not req.target_language:
        out.add("request.target_language", 'is required: a BCP-47 language tag such as "fr"')
    elif (problem := language_tag_problem(req.target_language)) is not None:
        out.add("request.target_language", problem)
    source = req.source_language
    if source and source.lower() != "auto" and (problem := language_tag_problem(source)):
        out.add("request.source_language", f'{problem}; or leave it empty or "auto" to detect')


def _url_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return f"{_show(url)} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"{_show(url)} is not an absolute http:// or https:// URL"
    return None


def _check_url(url: str, path: str, out: _Violations, *, required: bool = False) -> None:
    if not url:
        if required:
            out.add(path, "is required: an absolute http:// or https:// URL")
        return
    if (problem := _url_problem(url)) is not None:
        out.add(path, problem)


def _check_length(value: str, limit: int, path: str, out: _Violations) -> None:
    if len(value) > limit:
        out.add(path, f"must be at most {limit} characters")


def _duration_nanos(d: duration_pb2.Duration, path: str, out: _Violations) -> int | None:
    """`d` in nanoseconds, or None after reporting why it is not a valid Duration."""
    seconds, nanos = d.seconds, d.nanos
    if not -_MAX_NANOS <= nanos <= _MAX_NANOS:
        out.add(path, "is not a valid Duration: nanos must be within +-999,999,999")
        return None
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        out.add(path, "is not a valid Duration: seconds and nanos must have the same sign")
        return None
    if abs(seconds) > _MAX_DURATION_SECONDS:
        out.add(path, "is not a valid Duration: out of range")
        return None
    return seconds * _NANOS_PER_SECOND + nanos


def _fmt_seconds(nanos: int) -> str:
    return f"{nanos / _NANOS_PER_SECOND:g} s"


def _check_transcript_dubbing(work: pb.TranscriptDubbing, limits: Limits, out: _Violations) -> None:
    base = "request.transcript"
    _check_segments(work.script.segments, limits, out)
    if work.HasField("voice"):
        _check_voice(work.voice, f"{base}.voice", out)
    ratio = work.timing.max_stretch_ratio
    if ratio != 0 and not MIN_STRETCH_RATIO <= ratio <= MAX_STRETCH_RATIO:
        out.add(
            f"{base}.timing.max_stretch_ratio",
            f"must be 0 (service default) or between {MIN_STRETCH_RATIO:g} "
            f"and {MAX_STRETCH_RATIO:g}",
        )
    if work.output.format not in pb.AudioFormat.values():
        out.add(f"{base}.output.format", f"unknown audio format {work.output.format}")
    rate = work.output.sample_rate_hz
    if rate != 0 and rate not in SAMPLE_RATES_HZ:
        out.add(
            f"{base}.output.sample_rate_hz",
            "must be 0 (24000) or one of " + ", ".join(str(r) for r in sorted(SAMPLE_RATES_HZ)),
        )
    lufs = work.output.loudness_lufs
    if lufs != 0 and not MIN_LOUDNESS_LUFS <= lufs <= MAX_LOUDNESS_LUFS:
        out.add(
            f"{base}.output.loudness_lufs",
            f"must be 0 (-16) or between {MIN_LOUDNESS_LUFS:g} and {MAX_LOUDNESS_LUFS:g} LUFS",
        )
    if work.output.channels not in (0, 1, 2):
        out.add(
            f"{base}.output.channels",
            "must be 0 (stereo with a stereo background, else mono), 1 or 2",
        )
    if work.HasField("background"):
        _check_background(work.background, f"{base}.background", out)


def _check_background(bg: pb.BackgroundAudio, base: str, out: _Violations) -> None:
    source = bg.WhichOneof("source")
    if source is None:
        out.add(f"{base}.source", "one of url or asset is required")
    elif source == "url":
        _check_url(bg.url, f"{base}.url", out, required=True)
    elif not ASSET_NAME.fullmatch(bg.asset):
        out.add(
            f"{base}.asset",
            f"{_show(bg.asset)} is not an asset name: use the name UploadAsset returned, "
            '"assets/" followed by 32 lowercase hexadecimal digits',
        )
    if not (
        math.isfinite(bg.gain_db) and MIN_BACKGROUND_GAIN_DB <= bg.gain_db <= MAX_BACKGROUND_GAIN_DB
    ):
        out.add(
            f"{base}.gain_db",
            f"must be between {MIN_BACKGROUND_GAIN_DB:g} and {MAX_BACKGROUND_GAIN_DB:g} dB",
        )
    if bg.HasField("ducking_db") and not (
        math.isfinite(bg.ducking_db) and MIN_DUCKING_DB <= bg.ducking_db <= MAX_DUCKING_DB
    ):
        out.add(
            f"{base}.ducking_db",
            f"must be between {MIN_DUCKING_DB:g} (no ducking) and {MAX_DUCKING_DB:g} dB",
        )


def _check_segments(segments: Iterable[pb.Segment], limits: Limits, out: _Violations) -> None:
    base = "request.transcript.script.segments"
    segments = list(segments)
    if not segments:
        out.add(base, "at least one segment is required")
        return
    if len(segments) > limits.max_segments:
        out.add(base, f"has {len(segments)} segments; at most {limits.max_segments} are allowed")
    total = sum(len(s.text) for s in segments)
    if total > limits.max_characters:
        out.add(
            base,
            f"has {total} characters of text; at most {limits.max_characters} are allowed",
        )
    max_ns = round(limits.max_programme_seconds * _NANOS_PER_SECOND)
    # Index and end of the latest segment whose window is valid, to check the order.
    previous: tuple[int, int] | None = None
    for i, seg in enumerate(segments):
        path = f"{base}[{i}]"
        start: int | None = None
        end: int | None = None
        if not seg.HasField("start"):
            out.add(f"{path}.start", "is required")
        elif (start := _duration_nanos(seg.start, f"{path}.start", out)) is not None and start < 0:
            out.add(f"{path}.start", "must not be negative")
            start = None
        if not seg.HasField("end"):
            out.add(f"{path}.end", "is required")
        elif (end := _duration_nanos(seg.end, f"{path}.end", out)) is not None:
            if start is not None and end <= start:
                out.add(f"{path}.end", f"must be after start ({_fmt_seconds(start)})")
                end = None
            elif end > max_ns:
                out.add(
                    f"{path}.end",
                    f"must be at most {limits.max_programme_seconds:g} s from the start "
                    "of the programme",
                )
                end = None
        if start is not None and previous is not None and start < previous[1]:
            j, previous_end = previous
            out.add(
                f"{path}.start",
                f"overlaps or precedes segments[{j}], which ends at "
                f"{_fmt_seconds(previous_end)}; segments must be ordered by start "
                "and must not overlap",
            )
        elif start is not None and end is not None:
            previous = (i, end)
        if (problem := transcripts.text_problem(seg.text)) is not None:
            out.add(f"{path}.text", problem)
        elif len(seg.text) > limits.max_segment_characters:
            out.add(
                f"{path}.text",
                f"has {len(seg.text)} characters; at most "
                f"{limits.max_segment_characters} are allowed per segment",
            )
        _check_length(seg.speaker, MAX_SPEAKER_LENGTH, f"{path}.speaker", out)


def _check_voice(voice: pb.Voice, base: str, out: _Violations) -> None:
    if voice.gender not in pb.Gender.values():
        out.add(f"{base}.gender", f"unknown gender {voice.gender}")
    _check_length(voice.voice_id, MAX_VOICE_ID_LENGTH, f"{base}.voice_id", out)
    _check_url(voice.clone_from_audio_url, f"{base}.clone_from_audio_url", out)
    _check_url(voice.clone_from_video_url, f"{base}.clone_from_video_url", out)
    if voice.clone_from_audio_url and voice.clone_from_video_url:
        out.add(
            f"{base}.clone_from_video_url",
            "at most one of clone_from_audio_url and clone_from_video_url may be set",
        )
    if voice.HasField("settings"):
        _check_voice_settings(voice.settings, f"{base}.settings", out)


def _check_voice_settings(s: pb.VoiceSettings, base: str, out: _Violations) -> None:
    for name in ("stability", "similarity_boost", "style"):
        if s.HasField(name) and not 0.0 <= getattr(s, name) <= 1.0:
            out.add(f"{base}.{name}", "must be between 0 and 1")
    if s.HasField("speed") and not MIN_SPEED <= s.speed <= MAX_SPEED:
        out.add(f"{base}.speed", f"must be between {MIN_SPEED:g} and {MAX_SPEED:g}")
    if s.HasField("pitch") and not MIN_PITCH <= s.pitch <= MAX_PITCH:
        out.add(f"{base}.pitch", f"must be between {MIN_PITCH} and {MAX_PITCH} semitones")
    if s.HasField("volume") and not 0.0 < s.volume <= MAX_VOLUME:
        out.add(f"{base}.volume", f"must be greater than 0 and at most {MAX_VOLUME:g}")
    if s.emotion and s.emotion not in MINIMAX_EMOTIONS:
        out.add(
            f"{base}.emotion",
            f"unknown emotion {_show(s.emotion)}; use one of "
            f"{', '.join(sorted(MINIMAX_EMOTIONS))}, or leave it empty",
        )


def _check_media(media: pb.MediaDubbing, limits: Limits, out: _Violations) -> None:
    base = "request.media"
    _check_url(media.source_url, f"{base}.source_url", out, required=True)
    max_ns = round(limits.max_programme_seconds * _NANOS_PER_SECOND)
    clip: dict[str, int | None] = {}
    for name in ("start_time", "end_time"):
        clip[name] = None
        if not media.HasField(name):
            continue
        path = f"{base}.{name}"
        nanos = _duration_nanos(getattr(media, name), path, out)
        if nanos is None:
            continue
        if nanos < 0:
            out.add(path, "must not be negative")
        elif nanos % _NANOS_PER_SECOND:
            out.add(path, "must be whole seconds")
        elif nanos > max_ns:
            out.add(path, f"must be at most {limits.max_programme_seconds:g} s")
        else:
            clip[name] = nanos
    start, end = clip["start_time"], clip["end_time"]
    if start is not None and end is not None and end <= start:
        out.add(f"{base}.end_time", f"must be after start_time ({_fmt_seconds(start)})")
    if not 0 <= media.num_speakers <= MAX_NUM_SPEAKERS:
        out.add(f"{base}.num_speakers", f"must be between 0 (detect) and {MAX_NUM_SPEAKERS}")
    _check_length(media.target_accent, MAX_TARGET_ACCENT_LENGTH, f"{base}.target_accent", out)
    if media.mode not in pb.MediaDubbingMode.values():
        out.add(f"{base}.mode", f"unknown mode {media.mode}")
    manual = media.mode == pb.MEDIA_DUBBING_MODE_MANUAL
    for name in ("csv_url", "foreground_audio_url", "background_audio_url"):
        url: str = getattr(media, name)
        if url and not manual:
            out.add(f"{base}.{name}", "is only allowed in manual mode")
        else:
            _check_url(url, f"{base}.{name}", out, required=manual and name == "csv_url")
    fps = media.csv_fps
    if fps != 0 and not transcripts.valid_fps(fps):
        out.add(
            f"{base}.csv_fps",
            f"must be 0 (infer) or a frame rate above 0 and at most {transcripts.MAX_FPS:g}",
        )
    elif fps != 0 and not manual:
        out.add(f"{base}.csv_fps", "is only allowed in manual mode")


def _label_path(key: str) -> str:
    """AIP-161 path of a label; keys too long to echo are reported on the map itself."""
    if len(key) > _MAX_ECHOED_KEY_LENGTH:
        return "request.labels"
    if _IDENTIFIER.fullmatch(key):
        return f"request.labels.{key}"
    return "request.labels.`" + key.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _check_labels(labels: Mapping[str, str], limits: Limits, out: _Violations) -> None:
    if len(labels) > limits.max_labels:
        out.add(
            "request.labels", f"has {len(labels)} labels; at most {limits.max_labels} are allowed"
        )
    for key in sorted(labels):
        if not _LABEL_KEY.fullmatch(key):
            out.add(
                _label_path(key),
                f"label key {_show(key)} must start with a lowercase letter and have at most "
                "63 characters of a-z, 0-9, _ and -",
            )
        if len(labels[key]) > MAX_LABEL_VALUE_LENGTH:
            out.add(
                _label_path(key), f"label value must be at most {MAX_LABEL_VALUE_LENGTH} characters"
            )
