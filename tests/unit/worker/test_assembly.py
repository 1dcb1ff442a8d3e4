"""Placing clips on a track, resampling, and the ffmpeg encode/decode round trip."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from worker import assembly
from worker.assembly import (
    FADE_OUT_SECONDS,
    EncodeError,
    PlacedClip,
    decode,
    decode_to_pcm,
    encode,
    place_clips,
    resample,
)

SR = 16000


def tone(
    seconds: float, rate: int = SR, freq: float = 440.0, amp: float = 0.5
) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms(x: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


# --- resample -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [(22050, 48000), (48000, 22050), (44100, 16000), (16000, 16000)]
)
def test_resample_keeps_duration_and_pitch(src: int, dst: int) -> None:
    x = tone(1.0, src, freq=300.0)
    y = resample(x, src, dst)
    assert y.dtype == np.float32
    assert len(y) == round(len(x) * dst / src)
    # Dominant frequency survives.
    spectrum = np.abs(np.fft.rfft(y))
    peak = np.argmax(spectrum) * dst / len(y)
    assert abs(peak - 300.0) < 2.0
    assert abs(rms(y[100:-100]) - rms(x[100:-100])) < 0.02


def test_resample_down_removes_what_cannot_be_represented() -> None:
    # 10 kHz is above the 8 kHz Nyquist of 16 kHz output; without the low-pass it
    # would fold back to 6 kHz at nearly full level.
    x = tone(0.5, 48000, freq=10000.0)
    y = resample(x, 48000, 16000)
    assert rms(y) < 0.2 * rms(x)


def test_resample_short_and_empty() -> None:
    assert len(resample(np.zeros(0, np.float32), 22050, 48000)) == 0
    y = resample(np.ones(10, np.float32), 48000, 16000)  # shorter than the FIR
    assert len(y) == 3
    with pytest.raises(ValueError):
        resample(np.ones(10, np.float32), 0, 16000)


# --- place_clips --------------------------------------------------------------


def test_places_clips_where_asked() -> None:
    a, b = tone(0.5), tone(0.25, freq=880.0)
    track, report = place_clips(
        [PlacedClip(1.0, a, SR), PlacedClip(2.0, b, SR)], sample_rate=SR, total_duration=3.0
    )
    assert track.dtype == np.float32
    assert len(track) == 3 * SR
    assert np.array_equal(track[SR : SR + len(a)], a)
    assert np.array_equal(track[2 * SR : 2 * SR + len(b)], b)
    assert not np.any(track[:SR])  # silence before the first clip
    assert not np.any(track[SR + len(a) : 2 * SR])
    assert [c.truncated for c in report.clips] == [False, False]
    assert report.clips[0].start == 1.0 and report.clips[0].end == 1.5
    assert report.clips[1].start == 2.0 and report.clips[1].end == 2.25
    assert report.duration == 3.0
    assert report.truncated == 0 and report.truncated_clips == ()
    assert report.speech_seconds == pytest.approx(0.75)


def test_track_grows_for_a_late_clip() -> None:
    track, report = place_clips(
        [PlacedClip(2.9, tone(0.5), SR)], sample_rate=SR, total_duration=3.0
    )
    assert len(track) == round(3.4 * SR)
    assert report.duration == pytest.approx(3.4)
    assert report.clips[0].truncated is False  # the last clip runs on, it is never cut


def test_overlapping_clip_is_cut_at_next_start_with_fade() -> None:
    first, second = tone(1.0, amp=0.8), tone(0.5, freq=660.0)
    track, report = place_clips(
        [PlacedClip(0.0, first, SR), PlacedClip(0.6, second, SR)],
        sample_rate=SR,
        total_duration=1.0,
    )
    cut = round(0.6 * SR)
    fade = round(FADE_OUT_SECONDS * SR)
    # The second clip is untouched: nothing of the first leaks into it.
    assert np.array_equal(track[cut : cut + len(second)], second)
    # Before the fade the first clip is intact; across the fade it decays to zero.
    assert np.array_equal(track[: cut - fade], first[: cut - fade])
    tail = track[cut - fade : cut]
    envelope = np.abs(tail) / np.maximum(np.abs(first[cut - fade : cut]), 1e-9)
    assert np.all(np.diff(envelope[np.abs(first[cut - fade : cut]) > 0.05]) <= 1e-6)
    assert abs(track[cut - 1]) < 1e-6
    assert report.clips[0].truncated and not report.clips[1].truncated
    assert report.clips[0].end == pytest.approx(0.6)
    assert report.clips[0].cut_off == pytest.approx(0.4)
    assert report.truncated == 1 and report.truncated_clips == (report.clips[0],)
    assert report.speech_seconds == pytest.approx(0.6 + 0.5)


def test_never_overlaps_whatever_the_order() -> None:
    rng = np.random.default_rng(7)
    clips = [
        PlacedClip(float(start), tone(float(length), freq=200.0 + 50 * i), SR)
        for i, (start, length) in enumerate(
            zip(rng.uniform(0, 5, 20), rng.uniform(0.1, 2.0, 20), strict=True)
        )
    ]
    _, report = place_clips(clips, sample_rate=SR, total_duration=5.0)
    # Reported in input order...
    assert [c.index for c in report.clips] == list(range(20))
    # ...and in time order every clip ends before the next one starts.
    by_start = sorted(report.clips, key=lambda c: (c.start, c.index))
    for this, following in itertools.pairwise(by_start):
        assert this.end <= following.start + 1e-9
    for c, clip in zip(report.clips, clips, strict=True):
        assert c.end - c.start + c.cut_off == pytest.approx(len(clip.samples) / SR)
        assert c.truncated == (c.cut_off > 0)


def test_same_start_cuts_the_earlier_to_nothing() -> None:
    track, report = place_clips(
        [PlacedClip(0.5, tone(0.3), SR), PlacedClip(0.5, tone(0.2, freq=880.0), SR)],
        sample_rate=SR,
        total_duration=1.0,
    )
    assert report.clips[0].truncated and report.clips[0].end == report.clips[0].start
    assert np.array_equal(track[SR // 2 : SR // 2 + round(0.2 * SR)], tone(0.2, freq=880.0))


def test_clips_are_resampled_to_the_track_rate() -> None:
    clip = tone(0.5, 22050)
    _, report = place_clips([PlacedClip(0.0, clip, 22050)], sample_rate=48000, total_duration=0.0)
    assert report.clips[0].end == pytest.approx(0.5, abs=1 / 48000)
    assert report.duration == pytest.approx(0.5, abs=1 / 48000)


def test_no_clips_gives_silence() -> None:
    track, report = place_clips([], sample_rate=SR, total_duration=1.0)
    assert len(track) == SR and not np.any(track)
    assert report.clips == ()


@pytest.mark.parametrize("start", [-0.1, float("nan"), float("inf")])
def test_bad_start_rejected(start: float) -> None:
    with pytest.raises(ValueError):
        place_clips([PlacedClip(start, tone(0.1), SR)], sample_rate=SR, total_duration=1.0)


# --- TrackWriter --------------------------------------------------------------


def streamed(
    clips: list[PlacedClip], total_duration: float, rate: int = SR
) -> tuple[npt.NDArray[np.float32], assembly.PlacementReport, list[int]]:
    """The clips through a TrackWriter in start order; also the sizes handed to the sink."""
    parts: list[npt.NDArray[np.float32]] = []
    writer = assembly.TrackWriter(rate, parts.append)
    for i in sorted(range(len(clips)), key=lambda i: round(clips[i].start * rate)):
        writer.add(clips[i].start, resample(clips[i].samples, clips[i].sample_rate, rate), index=i)
    report = writer.close(total_duration)
    track = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return track, report, [len(p) for p in parts]


def naive_track(clips: list[PlacedClip], total: float, rate: int = SR) -> npt.NDArray[np.float32]:
    """The placement rule written out plainly, in memory: each clip (in start order) is cut
    where the next one starts, its last 10 ms faded to nothing."""
    placed = sorted(
        ((round(c.start * rate), resample(c.samples, c.sample_rate, rate)) for c in clips),
        key=lambda p: p[0],
    )
    fade = round(FADE_OUT_SECONDS * rate)
    cut = []
    for k, (s, x) in enumerate(placed):
        if k + 1 < len(placed) and s + len(x) > placed[k + 1][0]:
            x = x[: placed[k + 1][0] - s].copy()
            n = min(fade, len(x))
            x[len(x) - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
        cut.append((s, x))
    end = max([math.ceil(total * rate - 1e-6)] + [s + len(x) for s, x in cut])
    track = np.zeros(end, dtype=np.float32)
    for s, x in cut:
        track[s : s + len(x)] = x
    return track


@pytest.mark.parametrize("seed", range(6))
def test_track_writer_streams_what_place_clips_builds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    clips = []
    for i in range(n):
        # Random starts (some shared, some overlapping), rates and lengths, some empty.
        start = float(rng.choice([rng.uniform(0, 8), 2.0]))
        rate = int(rng.choice([SR, 22050, 24000]))
        length = float(rng.choice([0.0, rng.uniform(0.01, 2.5)]))
        clips.append(PlacedClip(start, tone(length, rate, freq=150.0 + 40 * i), rate))
    total = float(rng.uniform(0, 12))
    track, report, _ = streamed(clips, total)
    expected, expected_report = place_clips(clips, sample_rate=SR, total_duration=total)
    assert np.array_equal(track, expected)
    assert np.array_equal(track, naive_track(clips, total))
    assert report == expected_report
    assert len(track) >= round(total * SR)


def test_track_writer_refuses_a_clip_before_the_previous_start() -> None:
    writer = assembly.TrackWriter(SR, lambda _: None)
    writer.add(1.0, tone(0.1))
    writer.add(1.0, tone(0.1))  # the same start is allowed: the earlier is cut to nothing
    with pytest.raises(ValueError, match="before"):
        writer.add(0.999, tone(0.1))
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError):
            writer.add(bad, tone(0.1))
    with pytest.raises(ValueError):
        writer.close(float("inf"))


def test_track_writer_hands_long_silence_over_in_bounded_pieces() -> None:
    piece = assembly._SILENCE_PIECE
    rate = 8000
    # A pause of 2.5 pieces before the clip, and padding of 1.7 pieces after it.
    start = 2.5 * piece / rate
    clip = tone(0.5, rate)
    total = start + 0.5 + 1.7 * piece / rate
    track, report, sizes = streamed([PlacedClip(start, clip, rate)], total, rate)
    assert max(sizes) <= piece
    assert sizes.count(len(clip)) == 1
    assert len(sizes) >= 1 + 3 + 2
    first = round(start * rate)
    assert len(track) == math.ceil(total * rate - 1e-6)
    assert not np.any(track[:first]) and not np.any(track[first + len(clip) :])
    assert np.array_equal(track[first : first + len(clip)], clip)
    assert report.duration == pytest.approx(len(track) / rate)


# --- encode / decode ----------------------------------------------------------


def speechlike(seconds: float, rate: int) -> npt.NDArray[np.float32]:
    """A few harmonics under a syllable-rate envelope: spectrally closer to speech than a tone."""
    t = np.arange(round(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.3 * voice * syllables).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "out_rate", "decoded_rate"),
    [
        ("wav", 44100, 44100),
        ("flac", 22050, 22050),
        ("mp3", 44100, 44100),
        # Opus decoders always run at 48 kHz, whatever the encoder was given.
        ("opus", 48000, 48000),
        ("opus", 22050, 48000),
    ],
)
async def test_round_trip(fmt: str, out_rate: int, decoded_rate: int) -> None:
    rate, seconds = 22050, 2.5
    track = speechlike(seconds, rate)
    data = await encode(track, rate, fmt, out_rate)
    assert len(data) > 1000
    samples, got_rate = await decode(data)
    assert got_rate == decoded_rate
    assert samples.dtype == np.float32
    assert abs(len(samples) / got_rate - seconds) < 0.03
    assert rms(samples) == pytest.approx(rms(track), rel=0.1)


async def test_opus_rate_rounds_up_to_a_supported_one() -> None:
    data = await encode(speechlike(0.5, 22050), 22050, "opus", 22050)
    assert data[:4] == b"OggS"
    head = data.index(b"OpusHead")
    # OpusHead: magic(8) version(1) channels(1) pre-skip(2) input sample rate(4)
    assert data[head + 9] == 1
    assert int.from_bytes(data[head + 12 : head + 16], "little") == 24000


async def test_wav_is_16_bit_with_true_length() -> None:
    data = await encode(speechlike(1.0, 22050), 22050, "wav", 22050)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8  # header filled in
    bits = int.from_bytes(data[34:36], "little")
    assert bits == 16
    assert int.from_bytes(data[24:28], "little") == 22050


async def test_lossless_formats_are_lossless_to_16_bits() -> None:
    track = speechlike(1.0, 22050)
    for fmt in ("wav", "flac"):
        samples, _ = await decode(await encode(track, 22050, fmt, 22050))
        assert len(samples) == len(track)
        assert float(np.max(np.abs(samples - track))) < 2 / 32768, fmt


async def test_encode_clips_out_of_range_samples() -> None:
    loud = np.full(1000, 3.0, dtype=np.float32)
    samples, _ = await decode(await encode(loud, 16000, "wav", 16000))
    assert float(np.max(samples)) <= 1.0
    assert float(np.min(samples)) > 0.99


async def test_decode_can_resample() -> None:
    data = await encode(speechlike(1.0, 22050), 22050, "flac", 22050)
    samples, rate = await decode(data, sample_rate=16000)
    assert rate == 16000
    assert abs(len(samples) - 16000) < 50


def test_decode_to_pcm_matches_async_decode() -> None:
    track = speechlike(0.5, 16000)
    data = asyncio.run(encode(track, 16000, "flac", 16000))
    samples, rate = decode_to_pcm(data)
    assert rate == 16000
    assert len(samples) == len(track)


async def test_encode_failure_raises_encode_error() -> None:
    # MP3 has no 96 kHz mode: ffmpeg itself refuses, and its complaint must reach us.
    with pytest.raises(EncodeError) as err:
        await encode(speechlike(0.2, 22050), 22050, "mp3", 96000)
    assert "sample rate" in str(err.value).lower()
    assert err.value.stderr


async def test_decode_garbage_raises_encode_error() -> None:
    with pytest.raises(EncodeError):
        await decode(b"this is not audio at all" * 10)
    with pytest.raises(EncodeError):
        decode_to_pcm(b"")


async def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="aac"):
        await encode(speechlike(0.2, 22050), 22050, "aac", 22050)


async def test_concurrent_encodes() -> None:
    tracks = [speechlike(0.5 + 0.25 * i, 22050) for i in range(6)]
    datas = await asyncio.gather(*(encode(t, 22050, "flac", 22050) for t in tracks))
    for track, data in zip(tracks, datas, strict=True):
        samples, _ = await decode(data)
        assert len(samples) == len(track)
