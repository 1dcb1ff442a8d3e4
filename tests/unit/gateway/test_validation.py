"""Rules of gateway.validation: each test names the exact field paths it expects."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from google.protobuf import duration_pb2

from dubbing.settings import GatewaySettings
from dubbing.v1 import dubbing_pb2 as pb
from gateway.validation import (
    MAX_VIOLATIONS,
    Limits,
    language_tag_problem,
    request_hash,
    validate_dub_request,
    validate_list_request,
    validate_submit_request,
)

SEGMENTS = "request.transcript.script.segments"
VOICE = "request.transcript.voice"
SETTINGS = "request.transcript.voice.settings"
MEDIA = "request.media"
BACKGROUND = "request.transcript.background"
ASSET = "assets/0123456789abcdef0123456789abcdef"


def dur(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1_000_000_000))
    return d


def segment(start: float, end: float, text: str = "Bonjour.") -> pb.Segment:
    return pb.Segment(start=dur(start), end=dur(end), text=text, speaker="alice")


def transcript_request() -> pb.DubRequest:
    """A transcript request that sets every field to a valid value."""
    return pb.DubRequest(
        request_id="6f1c2b9e-3a55-4c1b-9a7e-0d2f1e8b4c3a",
        target_language="fr-FR",
        source_language="en",
        provider="minimax",
        transcript=pb.TranscriptDubbing(
            script=pb.Transcript(
                segments=[segment(0.0, 1.5), segment(1.5, 3.0), segment(4.25, 6.0)]
            ),
            voice=pb.Voice(
                gender=pb.GENDER_FEMALE,
                voice_id="French_Lady",
                settings=pb.VoiceSettings(
                    stability=0.5,
                    similarity_boost=1.0,
                    style=0.0,
                    use_speaker_boost=True,
                    speed=1.25,
                    pitch=-12,
                    volume=10.0,
                    emotion="calm",
                ),
                clone_from_audio_url="https://example.com/voice.mp3?sig=abc",
            ),
            timing=pb.TimingOptions(
                use_stitching=False, use_precise_timing=True, max_stretch_ratio=1.3
            ),
            output=pb.OutputOptions(format=pb.AUDIO_FORMAT_MP3, sample_rate_hz=44100),
            background=pb.BackgroundAudio(asset=ASSET, gain_db=-6.0, ducking_db=12.0),
        ),
        labels={"team": "news", "episode-id": "42", "a_b": ""},
        auto_delete_after_hours=24,
    )


def media_request() -> pb.DubRequest:
    """A manual-mode media request that sets every field to a valid value."""
    return pb.DubRequest(
        target_language="es",
        source_language="auto",
        provider="elevenlabs",
        media=pb.MediaDubbing(
            source_url="http://media.example.com:8080/show.mp4",
            start_time=dur(10),
            end_time=dur(70),
            num_speakers=32,
            highest_resolution=True,
            drop_background_audio=True,
            use_profanity_filter=True,
            disable_voice_cloning=True,
            target_accent="castilian",
            mode=pb.MEDIA_DUBBING_MODE_MANUAL,
            csv_url="https://example.com/script.csv",
            foreground_audio_url="https://example.com/fg.wav",
            background_audio_url="https://example.com/bg.wav",
            csv_fps=29.97,
        ),
    )


def fields(req: pb.DubRequest, limits: Limits | None = None) -> list[str]:
    return [field for field, _ in validate_dub_request(req, limits or Limits())]


# -- valid requests ----------------------------------------------------------------


def test_full_transcript_request_is_valid() -> None:
    assert validate_dub_request(transcript_request(), Limits()) == []


def test_full_media_request_is_valid() -> None:
    assert validate_dub_request(media_request(), Limits()) == []


def test_minimal_requests_are_valid() -> None:
    minimal_transcript = pb.DubRequest(target_language="de")
    minimal_transcript.transcript.script.segments.append(segment(0, 1, "Hallo"))
    minimal_media = pb.DubRequest(
        target_language="de", media=pb.MediaDubbing(source_url="https://x.example/a.mp3")
    )
    assert fields(minimal_transcript) == []
    assert fields(minimal_media) == []


def test_submit_request_without_request() -> None:
    assert [f for f, _ in validate_submit_request(pb.SubmitDubRequest(), Limits())] == ["request"]
    ok = pb.SubmitDubRequest(request=transcript_request())
    assert validate_submit_request(ok, Limits()) == []


def test_limits_from_settings() -> None:
    settings = GatewaySettings(max_segments=7, max_characters=99)
    limits = Limits.from_settings(settings)
    assert (limits.max_segments, limits.max_characters) == (7, 99)
    assert limits.max_segment_characters == Limits().max_segment_characters
    # Whatever the bus carries: a job must fit in a default client's response.
    assert limits.max_request_bytes == 3 * 1024 * 1024


def test_request_size() -> None:
    req = transcript_request()
    limits = Limits(max_request_bytes=req.ByteSize())
    assert fields(req, limits) == []
    req.labels["one"] = "more"
    assert fields(req, limits) == ["request"]


# -- work, languages, provider -------------------------------------------------------


def test_work_is_required() -> None:
    req = transcript_request()
    req.ClearField("transcript")
    assert fields(req) == ["request.work"]


def test_target_language_is_required() -> None:
    req = transcript_request()
    req.target_language = ""
    assert fields(req) == ["request.target_language"]


@pytest.mark.parametrize(
    "tag",
    [
        "fr",
        "FR",
        "pt-BR",
        "zh-Hant-TW",
        "sr-Latn-RS",
        "es-419",
        "yue",
        "zh-yue-HK",
        "de-CH-1901",
        "sl-rozaj-biske",
        "en-US-u-ca-gregory",
        "en-x-private",
        "qaa-Qaaa-QM-x-southern",
        "english-language",  # reserved 5-8 letter language subtag and a variant
        "a" * 8 + "".join(f"-variant{i}" for i in range(6)),  # 62 characters
    ],
)
def test_well_formed_language_tags(tag: str) -> None:
    assert language_tag_problem(tag) is None
    req = transcript_request()
    req.target_language = tag
    assert fields(req) == []


@pytest.mark.parametrize(
    "tag",
    [
        "pt_BR",
        "en-",
        "-en",
        "e",
        "englishlanguage",
        "en--US",
        "en US",
        "en-US\n",
        "fr-123456789",
        "x-private",
        "i-klingon",
        "en-GB-oed",
        "de-1901-1901",
        "en-a-bbb-a-ccc",
        "en-u",
        "e\u212a",  # KELVIN SIGN folds to "k" under Unicode case-insensitive matching
        "fr-ÇA",
        "a" * 8 + "-" + "-".join(["abcdefgh"] * 7),  # 71 characters
    ],
)
def test_malformed_language_tags(tag: str) -> None:
    assert language_tag_problem(tag) is not None
    req = transcript_request()
    req.target_language = tag
    assert fields(req) == ["request.target_language"]


@pytest.mark.parametrize("source", ["", "auto", "AUTO", "en-GB"])
def test_source_language_accepts_empty_auto_or_tag(source: str) -> None:
    req = transcript_request()
    req.source_language = source
    assert fields(req) == []


def test_source_language_must_be_well_formed() -> None:
    req = transcript_request()
    req.source_language = "en_GB"
    assert fields(req) == ["request.source_language"]


@pytest.mark.parametrize("provider", ["", "local", "elevenlabs", "minimax"])
def test_known_providers(provider: str) -> None:
    req = transcript_request()
    req.provider = provider
    assert fields(req) == []


@pytest.mark.parametrize("provider", ["google", "ElevenLabs", " local"])
def test_unknown_provider(provider: str) -> None:
    req = transcript_request()
    req.provider = provider
    assert fields(req) == ["request.provider"]


# -- transcript ---------------------------------------------------------------------


def with_segments(*segments: pb.Segment) -> pb.DubRequest:
    req = transcript_request()
    del req.transcript.script.segments[:]
    req.transcript.script.segments.extend(segments)
    return req


def test_at_least_one_segment() -> None:
    assert fields(with_segments()) == [SEGMENTS]


def test_segment_start_and_end_are_required() -> None:
    req = with_segments(pb.Segment(end=dur(1), text="a"), pb.Segment(start=dur(2), text="b"))
    assert fields(req) == [f"{SEGMENTS}[0].start", f"{SEGMENTS}[1].end"]


def test_segment_start_may_be_zero_but_not_negative() -> None:
    assert fields(with_segments(segment(0, 1))) == []
    assert fields(with_segments(segment(-0.5, 1))) == [f"{SEGMENTS}[0].start"]


@pytest.mark.parametrize("end", [2.0, 1.0])
def test_segment_end_must_be_after_start(end: float) -> None:
    assert fields(with_segments(segment(0, 1), segment(2, end))) == [f"{SEGMENTS}[1].end"]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n\t", "\u200b", "\t\n\r \u3000", "\ufeff\u2060\u00a0", "\u0301"],
)
def test_segment_text_must_not_be_blank(text: str) -> None:
    # Invisible characters (zero-width space, word joiner, a lone combining accent) would be
    # dubbed as silence: they are blank too.
    assert fields(with_segments(segment(0, 1, text))) == [f"{SEGMENTS}[0].text"]


@pytest.mark.parametrize("text", ["\x00", "Bon\x00jour", "a\x07b", "\x1b[31mrouge", "a\x9fb"])
def test_segment_text_must_not_hold_control_characters(text: str) -> None:
    violations = validate_dub_request(with_segments(segment(0, 1, text)), Limits())
    [(field, description)] = violations
    assert field == f"{SEGMENTS}[0].text" and "control characters" in description


@pytest.mark.parametrize("text", ["Ça va ?", "a\tb\nc\r", "\u200bOui", "…", "42", "♪"])
def test_segment_text_with_a_visible_character_is_fine(text: str) -> None:
    assert fields(with_segments(segment(0, 1, text))) == []


def test_segment_text_length() -> None:
    limits = Limits(max_segment_characters=5)
    assert fields(with_segments(segment(0, 1, "abcde")), limits) == []
    assert fields(with_segments(segment(0, 1, "abcdef")), limits) == [f"{SEGMENTS}[0].text"]


def test_overlapping_segment_is_reported_on_its_start() -> None:
    req = with_segments(segment(0, 2), segment(1.5, 3))
    violations = validate_dub_request(req, Limits())
    assert [f for f, _ in violations] == [f"{SEGMENTS}[1].start"]
    assert "segments[0]" in violations[0][1]


def test_out_of_order_segment_is_reported() -> None:
    req = with_segments(segment(5, 6), segment(0, 1))
    violations = validate_dub_request(req, Limits())
    assert [f for f, _ in violations] == [f"{SEGMENTS}[1].start"]
    assert "segments[0]" in violations[0][1]


def test_segments_may_touch() -> None:
    assert fields(with_segments(segment(0, 1), segment(1, 2), segment(2, 3))) == []


def test_order_is_checked_against_the_last_valid_segment() -> None:
    # segments[1] overlaps segments[0]; segments[2] still overlaps segments[0].
    req = with_segments(segment(0, 10), segment(5, 8), segment(9, 12))
    violations = validate_dub_request(req, Limits())
    assert [f for f, _ in violations] == [f"{SEGMENTS}[1].start", f"{SEGMENTS}[2].start"]
    assert "segments[0]" in violations[1][1]


def test_total_characters() -> None:
    limits = Limits(max_characters=10)
    ok = with_segments(segment(0, 1, "abcde"), segment(1, 2, "fghij"))
    too_many = with_segments(segment(0, 1, "abcde"), segment(1, 2, "fghijk"))
    assert fields(ok, limits) == []
    assert fields(too_many, limits) == [SEGMENTS]


def test_segment_count() -> None:
    limits = Limits(max_segments=2)
    assert fields(with_segments(segment(0, 1), segment(1, 2)), limits) == []
    req = with_segments(segment(0, 1), segment(1, 2), segment(2, 3))
    assert fields(req, limits) == [SEGMENTS]


def test_segment_end_within_programme_length() -> None:
    limits = Limits(max_programme_seconds=60)
    assert fields(with_segments(segment(59, 60)), limits) == []
    assert fields(with_segments(segment(59, 60.001)), limits) == [f"{SEGMENTS}[0].end"]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 1_000_000_000), (0, -1_000_000_000), (1, -1), (-1, 1), (315_576_000_001, 0)],
)
def test_malformed_durations(seconds: int, nanos: int) -> None:
    bad = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    req = with_segments(pb.Segment(start=bad, end=dur(1), text="a"))
    assert fields(req) == [f"{SEGMENTS}[0].start"]
    media = media_request()
    media.media.end_time.CopyFrom(bad)
    assert fields(media) == [f"{MEDIA}.end_time"]


def test_speaker_length() -> None:
    req = with_segments(pb.Segment(start=dur(0), end=dur(1), text="a", speaker="s" * 129))
    assert fields(req) == [f"{SEGMENTS}[0].speaker"]


# -- voice, timing, output ------------------------------------------------------------


def test_unknown_gender() -> None:
    req = transcript_request()
    req.transcript.voice.gender = 99  # type: ignore[assignment]
    assert fields(req) == [f"{VOICE}.gender"]


def test_clone_urls_are_exclusive() -> None:
    req = transcript_request()
    req.transcript.voice.clone_from_video_url = "https://example.com/v.mp4"
    assert fields(req) == [f"{VOICE}.clone_from_video_url"]


BAD_URLS = [
    "ftp://example.com/a.mp3",
    "/relative/a.mp3",
    "example.com/a.mp3",
    "https://",
    "https:///path",
    "file:///etc/passwd",
    "https://example.com/a b.mp3",
    "https://example.com:99999/a.mp3",
    "https://[::1/a.mp3",
    "https://example.com/" + "a" * 2048,
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_urls_must_be_absolute_http(url: str) -> None:
    req = transcript_request()
    req.transcript.voice.clone_from_audio_url = url
    assert fields(req) == [f"{VOICE}.clone_from_audio_url"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("stability", -0.01),
        ("stability", 1.01),
        ("similarity_boost", 2.0),
        ("style", math.nan),
        ("speed", 0.49),
        ("speed", 2.01),
        ("speed", math.inf),
        ("pitch", 13),
        ("pitch", -13),
        ("volume", 0.0),
        ("volume", 10.01),
        ("volume", math.nan),
    ],
)
def test_voice_settings_out_of_range(name: str, value: float) -> None:
    req = transcript_request()
    setattr(req.transcript.voice.settings, name, value)
    assert fields(req) == [f"{SETTINGS}.{name}"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("stability", 0.0), ("style", 1.0), ("speed", 0.5), ("speed", 2.0), ("pitch", 12)],
)
def test_voice_settings_bounds_are_inclusive(name: str, value: float) -> None:
    req = transcript_request()
    setattr(req.transcript.voice.settings, name, value)
    assert fields(req) == []


def test_unset_voice_settings_are_not_checked() -> None:
    req = transcript_request()
    req.transcript.voice.settings.Clear()
    assert fields(req) == []


def test_unknown_emotion() -> None:
    req = transcript_request()
    req.transcript.voice.settings.emotion = "bored"
    assert fields(req) == [f"{SETTINGS}.emotion"]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.4])
def test_max_stretch_ratio_valid(ratio: float) -> None:
    req = transcript_request()
    req.transcript.timing.max_stretch_ratio = ratio
    assert fields(req) == []


@pytest.mark.parametrize("ratio", [0.5, 0.99, 1.41, 2.0, -1.0, math.nan])
def test_max_stretch_ratio_invalid(ratio: float) -> None:
    req = transcript_request()
    req.transcript.timing.max_stretch_ratio = ratio
    assert fields(req) == ["request.transcript.timing.max_stretch_ratio"]


@pytest.mark.parametrize("lufs", [0.0, -16.0, -23.0, -36.0, -14.0])
def test_loudness_target_valid(lufs: float) -> None:
    req = transcript_request()
    req.transcript.output.loudness_lufs = lufs
    assert fields(req) == []


@pytest.mark.parametrize("lufs", [-36.5, -13.9, -10.0, 5.0, math.nan])
def test_loudness_target_invalid(lufs: float) -> None:
    req = transcript_request()
    req.transcript.output.loudness_lufs = lufs
    assert fields(req) == ["request.transcript.output.loudness_lufs"]


@pytest.mark.parametrize(
    ("channels", "ok"), [(0, True), (1, True), (2, True), (3, False), (-1, False)]
)
def test_output_channels(channels: int, ok: bool) -> None:
    req = transcript_request()
    req.transcript.output.channels = channels
    assert fields(req) == ([] if ok else ["request.transcript.output.channels"])


def test_unknown_output_format() -> None:
    req = transcript_request()
    req.transcript.output.format = 42  # type: ignore[assignment]
    assert fields(req) == ["request.transcript.output.format"]


# -- background audio ------------------------------------------------------------------


def test_background_is_optional() -> None:
    req = transcript_request()
    req.transcript.ClearField("background")
    assert fields(req) == []


def test_background_needs_a_source() -> None:
    req = transcript_request()
    req.transcript.background.ClearField("asset")
    assert fields(req) == [f"{BACKGROUND}.source"]


@pytest.mark.parametrize(
    "url", ["https://cdn.example.com/bed.mp3?sig=1", "http://10.0.0.1:8080/a.wav"]
)
def test_background_url_valid(url: str) -> None:
    req = transcript_request()
    req.transcript.background.url = url
    assert fields(req) == []


@pytest.mark.parametrize("url", ["", "bed.wav", *BAD_URLS])
def test_background_url_must_be_http_with_a_host(url: str) -> None:
    req = transcript_request()
    req.transcript.background.url = url
    assert fields(req) == [f"{BACKGROUND}.url"]


@pytest.mark.parametrize(
    "asset",
    [
        "",
        "0123456789abcdef0123456789abcdef",  # no prefix
        "assets/0123456789ABCDEF0123456789ABCDEF",  # uppercase
        "assets/0123456789abcdef0123456789abcde",  # 31 digits
        "assets/0123456789abcdef0123456789abcdef0",  # 33 digits
        "assets/../results/job/1.wav",
        "results/0123456789abcdef0123456789abcdef",
    ],
)
def test_background_asset_must_be_an_asset_name(asset: str) -> None:
    req = transcript_request()
    req.transcript.background.asset = asset
    assert fields(req) == [f"{BACKGROUND}.asset"]


@pytest.mark.parametrize("gain", [-60.0, 0.0, 20.0])
def test_background_gain_valid(gain: float) -> None:
    req = transcript_request()
    req.transcript.background.gain_db = gain
    assert fields(req) == []


@pytest.mark.parametrize("gain", [-60.1, 20.1, math.nan, math.inf, -math.inf])
def test_background_gain_out_of_range(gain: float) -> None:
    req = transcript_request()
    req.transcript.background.gain_db = gain
    assert fields(req) == [f"{BACKGROUND}.gain_db"]


@pytest.mark.parametrize("ducking", [0.0, 6.0, 40.0])
def test_background_ducking_valid(ducking: float) -> None:
    req = transcript_request()
    req.transcript.background.ducking_db = ducking
    assert fields(req) == []


@pytest.mark.parametrize("ducking", [-0.1, 40.1, math.nan, math.inf])
def test_background_ducking_out_of_range(ducking: float) -> None:
    req = transcript_request()
    req.transcript.background.ducking_db = ducking
    assert fields(req) == [f"{BACKGROUND}.ducking_db"]


def test_background_ducking_unset_is_not_checked() -> None:
    req = transcript_request()
    req.transcript.background.ClearField("ducking_db")
    assert fields(req) == []


def test_asset_names_are_what_upload_asset_gives() -> None:
    import uuid

    from dubbing import bus
    from gateway.validation import ASSET_NAME

    assert ASSET_NAME.fullmatch(bus.ASSET_NAME_PREFIX + uuid.uuid4().hex)


@pytest.mark.parametrize("rate", [0, 8000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_sample_rate_valid(rate: int) -> None:
    req = transcript_request()
    req.transcript.output.sample_rate_hz = rate
    assert fields(req) == []


@pytest.mark.parametrize("rate", [44000, 96000, -1, 1])
def test_sample_rate_invalid(rate: int) -> None:
    req = transcript_request()
    req.transcript.output.sample_rate_hz = rate
    assert fields(req) == ["request.transcript.output.sample_rate_hz"]


# -- media --------------------------------------------------------------------------


def test_media_source_url_required() -> None:
    req = media_request()
    req.media.source_url = ""
    assert fields(req) == [f"{MEDIA}.source_url"]


def test_media_source_url_must_be_http() -> None:
    req = media_request()
    req.media.source_url = "s3://bucket/show.mp4"
    assert fields(req) == [f"{MEDIA}.source_url"]


def test_media_clip_must_not_be_negative() -> None:
    req = media_request()
    req.media.start_time.CopyFrom(dur(-1))
    assert fields(req) == [f"{MEDIA}.start_time"]


@pytest.mark.parametrize("end", [10, 5])
def test_media_clip_end_after_start(end: int) -> None:
    req = media_request()
    req.media.end_time.CopyFrom(dur(end))
    assert fields(req) == [f"{MEDIA}.end_time"]


def test_media_clip_in_whole_seconds() -> None:
    req = media_request()
    req.media.start_time.CopyFrom(dur(1.5))
    assert fields(req) == [f"{MEDIA}.start_time"]


def test_media_clip_bounds_are_optional() -> None:
    req = media_request()
    req.media.ClearField("start_time")
    assert fields(req) == []
    req.media.ClearField("end_time")
    req.media.start_time.CopyFrom(dur(0))
    assert fields(req) == []


@pytest.mark.parametrize("n", [-1, 33])
def test_media_num_speakers(n: int) -> None:
    req = media_request()
    req.media.num_speakers = n
    assert fields(req) == [f"{MEDIA}.num_speakers"]


def test_media_unknown_mode() -> None:
    req = media_request()
    req.media.mode = 9  # type: ignore[assignment]
    # Not manual, so the manual-only fields are reported too.
    assert fields(req) == [
        f"{MEDIA}.mode",
        f"{MEDIA}.csv_url",
        f"{MEDIA}.foreground_audio_url",
        f"{MEDIA}.background_audio_url",
        f"{MEDIA}.csv_fps",
    ]


def test_media_manual_mode_requires_csv_url() -> None:
    req = media_request()
    req.media.csv_url = ""
    assert fields(req) == [f"{MEDIA}.csv_url"]


def test_media_manual_urls_must_be_http() -> None:
    req = media_request()
    req.media.background_audio_url = "bg.wav"
    assert fields(req) == [f"{MEDIA}.background_audio_url"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("csv_url", "https://example.com/a.csv"),
        ("foreground_audio_url", "https://example.com/fg.wav"),
        ("background_audio_url", "https://example.com/bg.wav"),
        ("csv_fps", 25.0),
    ],
)
@pytest.mark.parametrize(
    "mode", [pb.MEDIA_DUBBING_MODE_AUTOMATIC, pb.MEDIA_DUBBING_MODE_UNSPECIFIED]
)
def test_media_manual_fields_only_in_manual_mode(
    name: str, value: str | float, mode: pb.MediaDubbingMode.ValueType
) -> None:
    req = pb.DubRequest(
        target_language="es", media=pb.MediaDubbing(source_url="https://x.example/a.mp4")
    )
    req.media.mode = mode
    assert fields(req) == []
    setattr(req.media, name, value)
    assert fields(req) == [f"{MEDIA}.{name}"]


@pytest.mark.parametrize("fps", [-1.0, 240.01, math.nan, math.inf])
def test_media_csv_fps_range(fps: float) -> None:
    req = media_request()
    req.media.csv_fps = fps
    assert fields(req) == [f"{MEDIA}.csv_fps"]


@pytest.mark.parametrize("fps", [0.0, 0.5, 240.0])
def test_media_csv_fps_valid(fps: float) -> None:
    req = media_request()
    req.media.csv_fps = fps
    assert fields(req) == []


def test_media_target_accent_length() -> None:
    req = media_request()
    req.media.target_accent = "a" * 65
    assert fields(req) == [f"{MEDIA}.target_accent"]


# -- request_id, labels, auto delete --------------------------------------------------


@pytest.mark.parametrize("request_id", ["", "a", "job:2026-11-21_01.retry-1", "x" * 128])
def test_request_id_valid(request_id: str) -> None:
    req = transcript_request()
    req.request_id = request_id
    assert fields(req) == []


@pytest.mark.parametrize("request_id", ["x" * 129, "has space", "slash/no", "ünï", "a\n"])
def test_request_id_invalid(request_id: str) -> None:
    req = transcript_request()
    req.request_id = request_id
    assert fields(req) == ["request.request_id"]


def test_label_count() -> None:
    req = transcript_request()
    assert fields(req, Limits(max_labels=3)) == []
    assert fields(req, Limits(max_labels=2)) == ["request.labels"]


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("Team", "request.labels.`Team`"),
        ("1st", "request.labels.`1st`"),
        ("_x", "request.labels._x"),
        ("", "request.labels.``"),
        ("a.b", "request.labels.`a.b`"),
        ("back`tick", "request.labels.`back\\`tick`"),
        ("a" * 64, "request.labels." + "a" * 64),
        ("a" * 200, "request.labels"),
    ],
)
def test_label_key_syntax(key: str, path: str) -> None:
    req = transcript_request()
    req.labels[key] = "v"
    assert fields(req) == [path]


def test_label_key_longest_valid() -> None:
    req = transcript_request()
    req.labels["a" * 63] = "v"
    assert fields(req) == []


def test_label_value_length() -> None:
    req = transcript_request()
    req.labels["team"] = "v" * 256
    assert fields(req) == []
    req.labels["team"] = "v" * 257
    assert fields(req) == ["request.labels.team"]


@pytest.mark.parametrize("hours", [-1, 24 * 365 + 1])
def test_auto_delete_after_hours_invalid(hours: int) -> None:
    req = transcript_request()
    req.auto_delete_after_hours = hours
    assert fields(req) == ["request.auto_delete_after_hours"]


@pytest.mark.parametrize("hours", [0, 24 * 365])
def test_auto_delete_after_hours_valid(hours: int) -> None:
    req = transcript_request()
    req.auto_delete_after_hours = hours
    assert fields(req) == []


# -- collecting and capping -----------------------------------------------------------


def test_all_violations_are_collected() -> None:
    req = transcript_request()
    req.target_language = "fr_FR"
    req.provider = "acme"
    req.transcript.script.segments[1].text = ""
    req.transcript.voice.settings.pitch = 20
    req.transcript.output.sample_rate_hz = 11025
    req.auto_delete_after_hours = -5
    assert fields(req) == [
        "request.target_language",
        "request.provider",
        f"{SEGMENTS}[1].text",
        f"{SETTINGS}.pitch",
        "request.transcript.output.sample_rate_hz",
        "request.auto_delete_after_hours",
    ]


def test_violations_are_capped() -> None:
    req = with_segments(*(segment(i, i + 1, " ") for i in range(200)))
    violations = validate_dub_request(req, Limits())
    assert len(violations) == MAX_VIOLATIONS
    assert violations[-2][0] == f"{SEGMENTS}[{MAX_VIOLATIONS - 2}].text"
    assert violations[-1] == (
        "request",
        f"{200 - (MAX_VIOLATIONS - 1)} more violations are not listed",
    )


def test_exactly_the_cap_is_not_truncated() -> None:
    req = with_segments(*(segment(i, i + 1, " ") for i in range(MAX_VIOLATIONS)))
    violations = validate_dub_request(req, Limits())
    assert [f for f, _ in violations] == [f"{SEGMENTS}[{i}].text" for i in range(MAX_VIOLATIONS)]


# -- request_hash ---------------------------------------------------------------------


def test_request_hash_is_stable_hex() -> None:
    digest = request_hash(transcript_request())
    assert digest == request_hash(transcript_request())
    assert len(digest) == 64
    int(digest, 16)


def test_request_hash_ignores_map_order() -> None:
    a = transcript_request()
    a.labels.clear()
    a.labels["x"] = "1"
    a.labels["y"] = "2"
    b = transcript_request()
    b.labels.clear()
    b.labels["y"] = "2"
    b.labels["x"] = "1"
    assert request_hash(a) == request_hash(b)


def test_request_hash_ignores_how_the_message_was_built() -> None:
    a = transcript_request()
    b = pb.DubRequest.FromString(a.SerializeToString())
    assert request_hash(a) == request_hash(b)


def _set_target(r: pb.DubRequest) -> None:
    r.target_language = "fr-CA"


def _set_request_id(r: pb.DubRequest) -> None:
    r.request_id = "other"


def _move_segment(r: pb.DubRequest) -> None:
    r.transcript.script.segments[0].end.nanos += 1


def _explicit_default(r: pb.DubRequest) -> None:
    r.transcript.voice.settings.ClearField("use_speaker_boost")


def _add_label(r: pb.DubRequest) -> None:
    r.labels["new"] = ""


@pytest.mark.parametrize(
    "change", [_set_target, _set_request_id, _move_segment, _explicit_default, _add_label]
)
def test_request_hash_changes_with_any_parameter(change: Callable[[pb.DubRequest], None]) -> None:
    req = transcript_request()
    before = request_hash(req)
    change(req)
    assert request_hash(req) != before


def test_request_hash_tells_malformed_durations_apart() -> None:
    # Validation rejects these; hashing must still not crash or conflate them.
    bad = with_segments(
        pb.Segment(start=duration_pb2.Duration(seconds=1, nanos=-1), end=dur(2), text="a")
    )
    good = with_segments(pb.Segment(start=dur(1), end=dur(2), text="a"))
    assert request_hash(bad) != request_hash(good)


def test_request_hash_ignores_unknown_fields() -> None:
    req = with_segments(pb.Segment(start=dur(1), end=dur(2), text="a"))
    extra = pb.DubRequest()
    # Field 999 is not in the schema: as if a newer client sent it.
    extra.MergeFromString(req.SerializeToString() + b"\xb8\x3e\x01")
    assert extra.SerializeToString() != req.SerializeToString()
    assert request_hash(extra) == request_hash(req)


# -- ListJobs -------------------------------------------------------------------------


def test_list_states_and_views_must_exist() -> None:
    ok = pb.ListJobsRequest(states=[pb.Job.State.STATE_QUEUED], view=pb.JOB_VIEW_FULL)
    assert validate_list_request(ok) == []
    assert validate_list_request(pb.ListJobsRequest()) == []
    bad = pb.ListJobsRequest(states=[1, 99, -1, 0], view=7)  # type: ignore[list-item,arg-type]
    assert [f for f, _ in validate_list_request(bad)] == [
        "states[1]",
        "states[2]",
        "states[3]",
        "view",
    ]
