"""The chunked mixdown: limiter, ducking envelope and render(), measured on what was encoded.

Levels are measured on the decoded output with pyloudnorm and scipy filters, never
taken from the module's own report.
"""

from __future__ import annotations

import math
import tracemalloc
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
import scipy.signal

from dubbing.v1 import dubbing_pb2 as pb
from tests.helpers import segment, transcript_request
from worker import loudness, mixdown, transcript
from worker.assembly import decode_to_pcm
from worker.loudness import PEAK_CEILING, LoudnessMeter, limiter_reach
from worker.mixdown import Background, Ducking, DuckingEnvelope, PcmFile
from worker.providers.base import Capabilities, Gender, Language, Speech, SynthesisRequest

Samples = npt.NDArray[np.float32]

SR = 24_000
SMALL_CHUNK = 1 << 14  # 0.68 s at 24 kHz: a 12 s programme is 18 chunks
# 16-bit output: a sample may land half a step above where the float was.
PCM16_STEP = 1 / 32768


def pcm_file(path: Path, x: npt.ArrayLike, rate: int = SR) -> tuple[PcmFile, LoudnessMeter]:
    """`x` written in uneven pieces as the fitting pass would, measured on the way."""
    samples = np.asarray(x, dtype=np.float32)
    pcm, meter = PcmFile(path, rate), LoudnessMeter(rate)
    for piece in np.array_split(samples, 7):
        pcm.append(piece)
        meter.add(piece)
    pcm.finish()
    return PcmFile(path, rate, create=False), meter


def lufs(x: Samples, rate: int = SR) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64)))


def db(x: float) -> float:
    return 20 * math.log10(x)


def rms(x: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def band(x: Samples, low: float | None, high: float | None, rate: int = SR) -> Samples:
    """Zero-phase Butterworth: band-pass, or low-pass when `low` is None."""
    if low is None:
        sos = scipy.signal.butter(8, high, "lowpass", fs=rate, output="sos")
    else:
        sos = scipy.signal.butter(4, [low, high], "bandpass", fs=rate, output="sos")
    return np.asarray(scipy.signal.sosfiltfilt(sos, x.astype(np.float64)), dtype=np.float32)


def region_rms(x: Samples, spans: Sequence[tuple[float, float]], rate: int = SR) -> float:
    return rms(np.concatenate([x[round(a * rate) : round(b * rate)] for a, b in spans]))


def sine(seconds: float, freq: float, amp: float, rate: int = SR) -> Samples:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def bursts(
    seconds: float, spans: Sequence[tuple[float, float]], amp: float = 0.1, seed: int = 3
) -> Samples:
    """Noise in `spans` only, low-passed under 1 kHz (after gating, so edges are too)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(round(seconds * SR))
    for a, b in spans:
        x[round(a * SR) : round(b * SR)] = amp * rng.standard_normal(round(b * SR) - round(a * SR))
    return band(x.astype(np.float32), None, 900.0)


async def render_wav(
    tmp: Path,
    dub: Samples,
    target: float,
    background: tuple[Samples, float, DuckingEnvelope | None] | None = None,
    name: str = "out",
) -> tuple[Samples, loudness.Loudness]:
    """Run mixdown.render to a wav file and decode what it wrote."""
    dub_pcm, meter = pcm_file(tmp / f"{name}.dub.f32", dub)
    bg = None
    if background is not None:
        samples, gain_db, envelope = background
        bg_pcm, _ = pcm_file(tmp / f"{name}.bg.f32", samples)
        bg = Background(bg_pcm, gain_db, envelope)
    out = tmp / f"{name}.wav"
    result = await mixdown.render(
        dub_pcm,
        meter,
        target_lufs=target,
        out_path=out,
        fmt="wav",
        out_sample_rate=SR,
        background=bg,
    )
    decoded, rate = decode_to_pcm(out.read_bytes())
    assert rate == SR
    return decoded, result


def assert_on_target(out: Samples, result: loudness.Loudness, target: float) -> float:
    measured = lufs(out)
    assert measured == pytest.approx(target, abs=1.0)
    # What render reports is what was encoded.
    assert result.after == pytest.approx(measured, abs=0.3)
    assert float(np.max(np.abs(out))) <= PEAK_CEILING + PCM16_STEP
    return measured


# --- the limiter ------------------------------------------------------------------


def peaky(n: int, rate: int = SR, seed: int = 5) -> Samples:
    rng = np.random.default_rng(seed)
    x = 0.05 * rng.standard_normal(n)
    for i in rng.integers(0, n, 12):
        x[i] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
    return x.astype(np.float32)


def test_limit_holds_peaks_and_touches_nothing_out_of_its_reach() -> None:
    x = peaky(3 * SR)
    y = loudness.limit(x, SR)
    assert float(np.max(np.abs(y))) <= PEAK_CEILING + 1e-6
    over = np.flatnonzero(np.abs(x) > PEAK_CEILING)
    assert len(over)
    reach = limiter_reach(SR)
    near = np.zeros(len(x), dtype=bool)
    for i in over:
        near[max(0, i - reach) : i + reach + 1] = True
    assert np.array_equal(y[~near], x[~near])
    # Gain only ever goes down, and never flips a sign.
    assert np.all(np.abs(y) <= np.abs(x) + 1e-7)
    assert np.all(y * x >= 0)
    quiet = 0.5 * x / float(np.max(np.abs(x)))
    assert loudness.limit(quiet, SR) is quiet


def test_chunked_limiting_equals_whole_track_limiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = 4096
    monkeypatch.setattr(mixdown, "CHUNK", chunk)
    n = 10 * chunk + 1234
    x = peaky(n, seed=11)
    reach = limiter_reach(SR)
    # Peaks right on, just before and just after chunk boundaries, within the limiter's
    # reach of the next chunk, and at both ends of the programme.
    for k in range(1, 10):
        for offset, sign in [(-1, 1.0), (0, -1.0), (reach // 2, 1.0), (-reach + 3, -1.0)]:
            x[k * chunk + offset + (k % 3) * 7] = sign * (0.8 + 0.1 * k)
    x[0], x[5], x[-1], x[-4] = 1.2, -1.1, 0.95, -1.3
    pcm, _ = pcm_file(tmp_path / "dub.f32", x)
    mix = mixdown._Mix(pcm, 1.0, None)
    n_chunks = math.ceil(n / chunk)
    for gain in (1.0, 2.5):
        chunked = np.concatenate([mixdown._final_chunk(mix, i, n, gain) for i in range(n_chunks)])
        whole = loudness.limit((x * gain).astype(np.float32), SR)
        assert len(chunked) == n
        assert not np.array_equal(whole, x * gain)  # the limiter did work
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


# --- the ducking envelope ---------------------------------------------------------


def at(t: float) -> int:
    return round(t * SR)


def test_envelope_ramps_down_before_speech_and_recovers_after() -> None:
    d = Ducking(depth_db=12.0)
    env = DuckingEnvelope([(2.0, 3.0)], d, SR)
    g = env.gains(0, at(6.0))
    duck = 10 ** (-12 / 20)
    assert g.dtype == np.float32 and len(g) == at(6.0)
    # Full level until the ramp; it starts 150 ms before the speech.
    assert np.all(g[: at(2.0 - 0.15)] == 1.0)
    assert g[at(2.0 - 0.15) + 2] < 1.0
    ramp_down = g[at(1.85) : at(2.0) + 1]
    assert np.all(np.diff(ramp_down) <= 0)
    assert duck < g[at(1.925)] < 1.0
    # Fully down from the speech's start to its end.
    np.testing.assert_allclose(g[at(2.0) : at(3.0) + 1], duck, rtol=1e-6)
    # Back up over 400 ms after it, then full level.
    ramp_up = g[at(3.0) : at(3.4) + 1]
    assert np.all(np.diff(ramp_up) >= 0)
    assert duck < g[at(3.2)] < 1.0
    assert g[at(3.4) - 2] < 1.0
    assert np.all(g[at(3.4) + 1 :] == 1.0)


@pytest.mark.parametrize("depth", [6.0, 12.0, 30.0])
def test_envelope_depth(depth: float) -> None:
    env = DuckingEnvelope([(1.0, 2.0)], Ducking(depth_db=depth), SR)
    g = env.gains(at(1.0), at(1.0))
    np.testing.assert_allclose(g, 10 ** (-depth / 20), rtol=1e-6)


def test_short_pauses_stay_ducked_and_long_ones_recover() -> None:
    duck = 10 ** (-12 / 20)
    # A 0.4 s pause, under the 0.5 s hold: ducked all the way through.
    env = DuckingEnvelope([(1.0, 2.0), (2.4, 3.0)], Ducking(), SR)
    np.testing.assert_allclose(env.gains(at(1.0), at(2.0)), duck, rtol=1e-6)
    # A 1.2 s pause: longer than the hold plus both ramps (0.5 + 0.4 + 0.15 s).
    env = DuckingEnvelope([(1.0, 2.0), (3.2, 4.0)], Ducking(), SR)
    g = env.gains(0, at(5.0))
    assert np.all(g[at(2.4) + 1 : at(3.05) - 1] == 1.0)
    np.testing.assert_allclose(g[at(3.2) : at(4.0)], duck, rtol=1e-6)
    # A 0.52 s pause: past the hold, but the ramps (0.55 s) meet before full level.
    env = DuckingEnvelope([(1.0, 2.0), (2.52, 3.0)], Ducking(), SR)
    gap = env.gains(at(2.0), at(0.52))
    assert duck < float(gap.max()) < 1.0
    # Order and overlaps of the spans given do not matter; empty spans are ignored.
    shuffled = DuckingEnvelope([(3.2, 4.0), (1.0, 1.5), (1.4, 2.0), (4.5, 4.5)], Ducking(), SR)
    assert np.array_equal(
        shuffled.gains(0, at(5.0)),
        DuckingEnvelope([(1.0, 2.0), (3.2, 4.0)], Ducking(), SR).gains(0, at(5.0)),
    )


def test_envelope_in_chunks_is_the_same_curve() -> None:
    speech = [(0.05, 0.9), (1.3, 2.0), (2.9, 3.0), (3.41, 5.0), (7.0, 7.2)]
    env = DuckingEnvelope(speech, Ducking(depth_db=9.0), SR)
    total = at(8.0)
    whole = env.gains(0, total)
    rng = np.random.default_rng(4)
    for max_piece in (97, 5000, 40_000):
        # Single samples and empty pieces across the first ramp, then uneven pieces.
        sizes = [1] * at(0.3) + [0, 0]
        covered = sum(sizes)
        while covered < total:
            sizes.append(min(int(rng.integers(0, max_piece + 1)), total - covered))
            covered += sizes[-1]
        pieces, pos = [], 0
        for size in sizes:
            pieces.append(env.gains(pos, size))
            pos += size
        assert pos == total
        assert np.array_equal(np.concatenate(pieces), whole), max_piece


# --- render() -----------------------------------------------------------------------


@pytest.mark.parametrize("target", [-16.0, -23.0])
async def test_render_without_background_meets_the_target(tmp_path: Path, target: float) -> None:
    dub = bursts(9.0, [(0.5, 2.5), (3.0, 5.2), (6.0, 8.7)])
    out, result = await render_wav(tmp_path, dub, target)
    assert len(out) == len(dub)
    measured = assert_on_target(out, result, target)
    assert result.before == pytest.approx(lufs(dub), abs=0.01)
    assert measured == pytest.approx(result.before + result.gain_db, abs=0.3)


SPEECH = [(1.0, 3.0), (5.5, 7.5)]
# In speech, clear of the edges; far from speech: outside every ramp, with margin.
IN_SPEECH = [(1.2, 2.8), (5.7, 7.3)]
FAR = [(0.1, 0.7), (3.7, 5.1), (8.2, 11.8)]
BG_SECONDS, DUB_SECONDS = 12.0, 9.0


async def render_with_background(
    tmp: Path, depth: float | None, gain_db: float = 0.0, name: str = "out"
) -> tuple[Samples, loudness.Loudness]:
    """The 3 kHz sine under low-passed noise bursts (the speech), ducked by `depth`."""
    dub = bursts(DUB_SECONDS, SPEECH)
    bg = sine(BG_SECONDS, 3000.0, 0.05)
    envelope = DuckingEnvelope(SPEECH, Ducking(depth_db=depth), SR) if depth else None
    return await render_wav(tmp, dub, -16.0, (bg, gain_db, envelope), name=name)


def background_level(out: Samples, spans: Sequence[tuple[float, float]]) -> float:
    """dB of the 3 kHz background in `spans` of the output."""
    return db(region_rms(band(out, 2800.0, 3200.0), spans))


def dub_level(out: Samples) -> float:
    """dB of the (sub-1 kHz) speech in the output."""
    return db(region_rms(band(out, None, 1000.0), IN_SPEECH))


@pytest.mark.parametrize("chunk", [SMALL_CHUNK, mixdown.CHUNK])
@pytest.mark.parametrize("depth", [12.0, 6.0])
async def test_background_is_ducked_under_speech_by_the_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, depth: float
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", chunk)
    out, result = await render_with_background(tmp_path, depth)
    # As long as the longer of the two: the background here.
    assert len(out) == round(BG_SECONDS * SR)
    dip = background_level(out, FAR) - background_level(out, IN_SPEECH)
    assert dip == pytest.approx(depth, abs=1.0)
    assert_on_target(out, result, -16.0)


async def test_no_ducking_leaves_the_background_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", SMALL_CHUNK)
    out, result = await render_with_background(tmp_path, None)
    dip = background_level(out, FAR) - background_level(out, IN_SPEECH)
    assert dip == pytest.approx(0.0, abs=0.5)
    assert_on_target(out, result, -16.0)


async def test_background_gain_is_relative_to_the_dub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", SMALL_CHUNK)
    plain, _ = await render_with_background(tmp_path, 12.0, 0.0, name="plain")
    lowered, result = await render_with_background(tmp_path, 12.0, -6.0, name="lowered")
    relative_plain = background_level(plain, FAR) - dub_level(plain)
    relative_lowered = background_level(lowered, FAR) - dub_level(lowered)
    assert relative_plain - relative_lowered == pytest.approx(6.0, abs=0.5)
    assert_on_target(lowered, result, -16.0)


async def test_a_dub_longer_than_the_background_sets_the_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", SMALL_CHUNK)
    dub = bursts(DUB_SECONDS, SPEECH)
    bg = sine(2.0, 3000.0, 0.05)
    out, result = await render_wav(tmp_path, dub, -16.0, (bg, 0.0, None))
    assert len(out) == len(dub)
    # The background stops after 2 s: nothing at 3 kHz where it is gone.
    assert background_level(out, [(0.1, 0.7)]) > -40
    assert region_rms(out, [(3.5, 5.0)]) < 1e-4
    assert_on_target(out, result, -16.0)


@pytest.mark.parametrize("with_background", [False, True])
async def test_a_loud_target_is_met_with_the_limiter_holding_peaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_background: bool
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", SMALL_CHUNK)
    dub = bursts(DUB_SECONDS, [*SPEECH, (8.0, 9.0)], amp=0.05)
    rng = np.random.default_rng(8)
    # Clicks 20 dB over the speech, all through it: -14 LUFS cannot be had without limiting.
    for i in rng.integers(0, len(dub), 80):
        dub[i] = rng.choice([-0.5, 0.5])
    bg = (sine(BG_SECONDS, 3000.0, 0.02), -3.0, DuckingEnvelope(SPEECH, Ducking(), SR))
    out, result = await render_wav(tmp_path, dub, -14.0, bg if with_background else None)
    assert result.peak_limited
    assert_on_target(out, result, -14.0)


async def test_silence_is_encoded_as_silence(tmp_path: Path) -> None:
    out, result = await render_wav(tmp_path, np.zeros(2 * SR, dtype=np.float32), -16.0)
    assert len(out) == 2 * SR and not np.any(out)
    assert result.after == -math.inf and result.gain_db == 0.0


# --- a long programme in bounded memory ----------------------------------------------


class ToneVoice:
    """A fast stand-in for the upstream voice: two seconds of tone per utterance."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        t = np.arange(2 * rate) / rate
        self._take = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        self._take[:240] *= np.linspace(0, 1, 240, dtype=np.float32)
        self._take[-240:] *= np.linspace(1, 0, 240, dtype=np.float32)
        self.calls = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider="tone",
            languages=(Language("fr", "French", (Gender.FEMALE,)),),
            min_speed=0.5,
            max_speed=2.0,
            max_chars_per_request=1000,
        )

    async def synthesize(self, request: SynthesisRequest) -> Speech:
        self.calls += 1
        return Speech(self._take.copy(), self.rate, characters=len(request.text))

    async def aclose(self) -> None:
        pass


async def test_an_hour_long_programme_is_assembled_in_bounded_memory(tmp_path: Path) -> None:
    rate, minutes = 24_000, 60
    n = minutes * 10  # one 2 s line every 6 s
    request = transcript_request(
        [segment(6.0 * i + 0.5, 6.0 * i + 3.0, f"Ligne {i}.") for i in range(n)],
        output_format=pb.AUDIO_FORMAT_WAV,
        sample_rate=rate,
    )
    voice = ToneVoice(rate)

    async def report(stage: str, progress: float) -> None:
        pass

    whole_programme = 4 * 6.0 * n * rate
    tracemalloc.start()
    try:
        dubbed = await transcript.dub_transcript(request, voice, report, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"{minutes} min programme: traced peak {peak / 1e6:.1f} MB; "
        f"the programme at float32 is {whole_programme / 1e6:.0f} MB"
    )
    assert peak < 150e6
    assert voice.calls == n
    assert dubbed.duration_seconds == pytest.approx(6.0 * (n - 1) + 3.0, abs=0.01)
    assert dubbed.generated_audio_seconds == pytest.approx(2.0 * n, abs=0.5)
    assert dubbed.loudness_lufs == pytest.approx(-16.0, abs=0.5)
    # The file holds the whole programme: 16-bit mono at the asked rate.
    with wave.open(str(dubbed.path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
        assert w.getnframes() == round(dubbed.duration_seconds * rate)
        # Spot checks on what was encoded. A minute from the middle: ten lines and the
        # pauses between, as loud as the programme (which repeats it).
        w.setpos(round(6.0 * 300 * rate))
        pcm16 = np.frombuffer(w.readframes(60 * rate), dtype="<i2")
    minute = (pcm16 / 32768).astype(np.float32)
    assert not np.any(minute[: rate // 2])  # before the line
    assert np.any(minute[rate // 2 : rate])
    assert lufs(minute) == pytest.approx(-16.0, abs=0.5)


# --- stereo -----------------------------------------------------------------------


def read_wav_frames(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """(frames, channels) of a 16-bit wav, read without ffmpeg (which would downmix)."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == SR
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.reshape(-1, channels).astype(np.float64) / 32768.0, channels


def test_stereo_meter_and_linked_limiter() -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((SR * 6, 2)) * np.array([0.1, 0.02])).astype(np.float32)
    x[SR : 2 * SR] = 0.0
    meter = LoudnessMeter(SR, 2)
    for piece in np.array_split(x, 9):
        meter.add(piece)
    reference = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    assert meter.integrated() == pytest.approx(reference, abs=0.01)

    loud = x * 12.0
    held = loudness.limit(loud, SR)
    assert float(np.abs(held).max()) <= PEAK_CEILING + 1e-6
    # One gain for both channels: their ratio is untouched wherever the right one is audible.
    audible = np.abs(loud[:, 1]) > 1e-3
    ratio_in = loud[audible, 0] / loud[audible, 1]
    ratio_out = held[audible, 0] / held[audible, 1]
    assert np.allclose(ratio_in, ratio_out, rtol=1e-4)


def test_stereo_pcm_file_round_trip_and_dual_mono(tmp_path: Path) -> None:
    frames = np.stack([sine(1.0, 100.0, 0.3), sine(1.0, 200.0, 0.3)], axis=1)
    pcm = PcmFile(tmp_path / "s.f32", SR, channels=2)
    for piece in np.array_split(frames, 5):
        pcm.append(piece)
    pcm.finish()
    back = PcmFile(tmp_path / "s.f32", SR, create=False, channels=2)
    assert back.samples == SR
    assert np.array_equal(back.read(-10, SR + 10)[10:-10], frames)
    assert not back.read(-10, 0).any() and back.read(-10, 0).shape == (10, 2)
    assert not back.is_dual_mono()
    twin = PcmFile(tmp_path / "d.f32", SR, channels=2)
    twin.append(np.repeat(frames[:, :1], 2, axis=1))
    twin.finish()
    assert PcmFile(tmp_path / "d.f32", SR, create=False, channels=2).is_dual_mono()


async def render_stereo(
    tmp: Path, channels: int, background: npt.NDArray[np.float32] | None
) -> tuple[npt.NDArray[np.float64], int, loudness.Loudness]:
    dub_pcm, meter = pcm_file(tmp / "dub.f32", bursts(DUB_SECONDS, SPEECH))
    bg = None
    if background is not None:
        pcm = PcmFile(tmp / "bg.f32", SR, channels=background.shape[1])
        pcm.append(background)
        pcm.finish()
        bg_pcm = PcmFile(tmp / "bg.f32", SR, create=False, channels=background.shape[1])
        bg = Background(bg_pcm, 0.0, DuckingEnvelope(SPEECH, Ducking(), SR))
    out = tmp / "out.wav"
    result = await mixdown.render(
        dub_pcm,
        meter,
        target_lufs=-16.0,
        out_path=out,
        fmt="wav",
        out_sample_rate=SR,
        background=bg,
        channels=channels,
    )
    frames, n = read_wav_frames(out)
    return frames, n, result


async def test_stereo_background_keeps_its_image_with_the_dub_in_the_centre(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixdown, "CHUNK", SMALL_CHUNK)
    left, right = sine(BG_SECONDS, 3000.0, 0.05), sine(BG_SECONDS, 5000.0, 0.05)
    frames, n, result = await render_stereo(tmp_path, 2, np.stack([left, right], axis=1))
    assert n == 2 and len(frames) == round(BG_SECONDS * SR)
    l_ch, r_ch = frames[:, 0].astype(np.float32), frames[:, 1].astype(np.float32)

    def level(x: Samples, freq: float) -> float:
        return db(region_rms(band(x, freq - 200, freq + 200), FAR) + 1e-9)

    # Each tone stays on its side: at least 40 dB down on the other.
    assert level(l_ch, 3000.0) - level(r_ch, 3000.0) > 40
    assert level(r_ch, 5000.0) - level(l_ch, 5000.0) > 40
    # The speech sits in the centre: the same level in both channels.
    speech_l = region_rms(band(l_ch, None, 1000.0), IN_SPEECH)
    speech_r = region_rms(band(r_ch, None, 1000.0), IN_SPEECH)
    assert db(speech_l) == pytest.approx(db(speech_r), abs=0.1)
    measured = pyloudnorm.Meter(SR).integrated_loudness(frames)
    assert measured == pytest.approx(-16.0, abs=1.0)
    assert result.after == pytest.approx(measured, abs=0.3)
    assert float(np.abs(frames).max()) <= PEAK_CEILING + PCM16_STEP


async def test_mono_output_downmixes_a_stereo_background(tmp_path: Path) -> None:
    left, right = sine(BG_SECONDS, 3000.0, 0.05), sine(BG_SECONDS, 5000.0, 0.05)
    frames, n, _ = await render_stereo(tmp_path, 1, np.stack([left, right], axis=1))
    assert n == 1
    mono = frames[:, 0].astype(np.float32)
    both = [db(region_rms(band(mono, f - 200, f + 200), FAR)) for f in (3000.0, 5000.0)]
    assert both[0] == pytest.approx(both[1], abs=0.5)  # both sides, equally
    assert lufs(mono) == pytest.approx(-16.0, abs=1.0)


async def test_stereo_without_background_is_the_dub_in_both_channels(tmp_path: Path) -> None:
    frames, n, result = await render_stereo(tmp_path, 2, None)
    assert n == 2 and np.array_equal(frames[:, 0], frames[:, 1])
    measured = pyloudnorm.Meter(SR).integrated_loudness(frames)
    assert measured == pytest.approx(-16.0, abs=1.0)
    assert result.after == pytest.approx(measured, abs=0.3)
