"""Loudness: the chunked BS.1770 meter held to pyloudnorm, and normalisation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest

from worker import assembly, loudness
from worker.loudness import LoudnessMeter

Samples = npt.NDArray[np.float32]


def reference(x: npt.ArrayLike, rate: int) -> float:
    """pyloudnorm's integrated loudness: the independent figure."""
    return float(pyloudnorm.Meter(rate).integrated_loudness(np.asarray(x, dtype=np.float64)))


def programme(rate: int, seconds: float, seed: int = 1) -> Samples:
    """Noise and tones at levels far apart, and silence: every gate has work to do."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n)
    edges = np.linspace(0, n, 9).astype(int)
    levels_db = [-18.0, -60.0, -30.0, -200.0, -12.0, -45.0, -24.0, -75.0]
    for (a, b), level in zip(itertools.pairwise(edges), levels_db, strict=True):
        x[a:b] = 10 ** (level / 20) * (
            rng.standard_normal(b - a) + np.sin(2 * np.pi * 180 * t[a:b])
        )
    return x.astype(np.float32)


def chunkings(n: int, seed: int = 2) -> Iterator[tuple[str, list[int]]]:
    """Ways to cut `n` samples into chunks: sizes that add up to n."""
    yield "whole", [n]
    yield "even", [4000] * (n // 4000) + ([n % 4000] if n % 4000 else [])
    rng = np.random.default_rng(seed)
    uneven: list[int] = []
    while sum(uneven) < n:
        uneven.append(min(n - sum(uneven), int(rng.integers(1, 20_000))))
    yield "uneven", uneven
    # One sample at a time (through several 100 ms steps), then uneven chunks, some empty.
    ones = [1] * 2500
    rest: list[int] = []
    while 2500 + sum(rest) < n:
        rest.append(min(n - 2500 - sum(rest), int(rng.integers(0, 7000))))
    yield "single samples", ones + rest


def measured(x: Samples, rate: int, sizes: list[int]) -> LoudnessMeter:
    meter = LoudnessMeter(rate)
    pos = 0
    for size in sizes:
        meter.add(x[pos : pos + size])
        pos += size
    assert pos == len(x)
    return meter


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_meter_equals_pyloudnorm_whatever_the_chunking(rate: int) -> None:
    # 7.37 s: not a whole number of 100 ms steps, so the last block is a partial one.
    x = programme(rate, 7.37)
    expected = reference(x, rate)
    assert -40 < expected < -10
    for name, sizes in chunkings(len(x)):
        meter = measured(x, rate, sizes)
        assert meter.samples == len(x)
        assert meter.integrated() == pytest.approx(expected, abs=0.01), name
        assert meter.peak == float(np.max(np.abs(x))), name


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_meter_equals_pyloudnorm_over_digital_silence(rate: int) -> None:
    # A dub's timeline: loud lines cut off abruptly (the filters still ring) and long
    # stretches of exact zeros, handed over as whole pieces of silence as TrackWriter does.
    rng = np.random.default_rng(6)
    pieces: list[Samples] = []
    for i in range(12):
        line = 0.2 * rng.standard_normal(int(rng.integers(rate // 5, 2 * rate)))
        pieces.append((line * (1 + 3 * (i % 3))).astype(np.float32))
        silence = int(rng.choice([rate // 100, rate // 5, rate // 4 + 1, rate, 7 * rate]))
        pieces.append(np.zeros(silence, dtype=np.float32))
    x = np.concatenate(pieces)
    expected = reference(x, rate)
    meter = LoudnessMeter(rate)
    for piece in pieces:
        meter.add(piece)
    assert meter.integrated() == pytest.approx(expected, abs=0.01)
    # Stricter than the gated figure: every 100 ms energy, the filters' ringing into
    # the silence included, as pyloudnorm's own filters give it over the whole track.
    y = x.astype(np.float64)
    for stage in pyloudnorm.Meter(rate)._filters.values():
        y = stage.apply_filter(y)
    step = rate // 10
    squares = np.square(np.concatenate([y, np.zeros(-len(y) % step)]))
    np.testing.assert_allclose(
        meter.step_energies(), squares.reshape(-1, step).sum(axis=1), rtol=1e-9, atol=1e-15
    )
    for name, sizes in chunkings(len(x)):
        assert measured(x, rate, sizes).integrated() == pytest.approx(expected, abs=0.01), name


@pytest.mark.parametrize("seconds", [0.4, 0.43, 0.45, 0.55, 1.0, 2.96])
def test_meter_agrees_on_where_the_programme_ends(seconds: float) -> None:
    # Loud at the very end: whether the last, partial block counts shows in the figure.
    rate = 24_000
    n = round(seconds * rate)
    x = np.full(n, 0.001, dtype=np.float32)
    x[-round(0.12 * rate) :] = 0.5
    meter = LoudnessMeter(rate)
    meter.add(x)
    assert meter.integrated() == pytest.approx(reference(x, rate), abs=0.01)


def test_silence_and_short_programmes_have_no_loudness() -> None:
    rate = 24_000
    silent = LoudnessMeter(rate)
    for _ in range(10):
        silent.add(np.zeros(rate // 3, dtype=np.float32))
    assert silent.integrated() == -math.inf
    assert silent.peak == 0.0
    # Below the absolute gate (-70 LUFS) is silence too.
    quiet = LoudnessMeter(rate)
    quiet.add(np.full(3 * rate, 1e-5, dtype=np.float32))
    assert quiet.integrated() == -math.inf
    # Under one 400 ms block, however loud.
    short = LoudnessMeter(rate)
    short.add(np.full(round(0.39 * rate), 0.9, dtype=np.float32))
    assert short.integrated() == -math.inf
    assert short.peak == pytest.approx(0.9)
    assert LoudnessMeter(rate).integrated() == -math.inf


def test_peak_is_the_largest_magnitude_seen() -> None:
    meter = LoudnessMeter(8000)
    meter.add([0.1, -0.2])
    meter.add(np.zeros(0, dtype=np.float32))
    meter.add([-0.7, 0.3])
    meter.add([0.5])
    assert meter.peak == pytest.approx(0.7)
    assert meter.samples == 5


def test_rates_that_are_not_a_whole_number_of_samples_per_step_are_refused() -> None:
    with pytest.raises(ValueError):
        LoudnessMeter(44_105)
    with pytest.raises(ValueError):
        LoudnessMeter(0)


# --- normalize_loudness (in memory) ---------------------------------------------


async def _speech_track(sample_rate: int = 24_000) -> Samples:
    from worker.providers.base import SynthesisRequest
    from worker.providers.local import LocalProvider

    provider = LocalProvider()
    clips = []
    for i, text in enumerate(["Bonjour à tous.", "Merci d'être venus.", "À bientôt."]):
        speech = await provider.synthesize(SynthesisRequest(text=text, language="fr"))
        samples = assembly.resample(speech.samples, speech.sample_rate, sample_rate)
        clips.append(assembly.PlacedClip(start=2.0 * i, samples=samples, sample_rate=sample_rate))
    track, _ = assembly.place_clips(clips, sample_rate=sample_rate, total_duration=6.0)
    return track


@pytest.mark.parametrize("target", [-16.0, -23.0])
async def test_loudness_is_normalised_to_the_target(target: float) -> None:
    track = await _speech_track()
    out, result = loudness.normalize_loudness(track, 24_000, target)
    measured = reference(out, 24_000)
    assert abs(measured - target) < 0.5
    assert abs(result.after - measured) < 0.01
    assert float(np.max(np.abs(out))) <= 10 ** (-1 / 20) + 1e-6


async def test_loud_targets_are_reached_without_clipping() -> None:
    track = await _speech_track()
    out, result = loudness.normalize_loudness(track, 24_000, -14.0)  # the loudest allowed
    assert result.peak_limited
    measured = reference(out, 24_000)
    assert abs(measured - (-14.0)) < 1.0
    assert float(np.max(np.abs(out))) <= 10 ** (-1 / 20) + 1e-6


def test_silence_is_left_alone() -> None:
    track = np.zeros(24_000 * 2, dtype=np.float32)
    out, result = loudness.normalize_loudness(track, 24_000, -16.0)
    assert np.array_equal(out, track) and result.gain_db == 0.0
