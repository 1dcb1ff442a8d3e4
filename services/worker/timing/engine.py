"""fit(): synthesize every window and make its speech sit inside it."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np

from worker.assembly import Samples, fade_out, resample

from .dsp import fit_length, speech_bounds, stretch
from .model import Clip, FitPolicy, SegmentTiming, Synthesize, TimingSummary, Window

# Windows closer than this count as touching (precise-timing stitching).
_TOUCH = 1e-3
# A re-synthesis must ask for at least this much more speed to be worth a call.
_MIN_RATE_STEP = 0.01
# Ratios closer to 1 than this are not worth a stretch: the overflow is cut instead
# (it is at most 0.1% of the utterance, a few ms).
_MIN_STRETCH = 1.001


DEFAULT_POLICY = FitPolicy()


@dataclass(frozen=True, slots=True)
class _Take:
    """A synthesized utterance at the engine's rate, leading silence removed."""

    samples: Samples
    speed: float
    content_end: int | None  # end of the speech plus tail pad; None = no speech at all


@dataclass(frozen=True, slots=True)
class _Shaped:
    samples: Samples
    stretch: float
    remedies: tuple[str, ...]
    overrun: float
    speech: tuple[int, int] | None  # [first, end) samples of speech in `samples`


def _units(windows: Sequence[Window], policy: FitPolicy) -> list[list[Window]]:
    """Group windows into utterances: stitch short adjacent same-speaker windows."""
    max_gap = _TOUCH if policy.use_precise_timing else policy.stitch_max_gap + 1e-9
    units: list[list[Window]] = []
    for w in windows:
        if policy.use_stitching and units:
            unit = units[-1]
            last = unit[-1]
            if (
                w.speaker == last.speaker
                and w.start - last.end <= max_gap
                and w.end - w.start <= policy.stitch_max_segment
                and last.end - last.start <= policy.stitch_max_segment
                and w.end - unit[0].start <= policy.stitch_max_duration
            ):
                unit.append(w)
                continue
        units.append([w])
    return units


def _validate(windows: Sequence[Window], min_speed: float, max_speed: float) -> None:
    if not (0 < min_speed <= max_speed and math.isfinite(max_speed)):
        raise ValueError(f"bad provider speed range [{min_speed}, {max_speed}]")
    previous_end = 0.0
    for i, w in enumerate(windows):
        if not (math.isfinite(w.start) and math.isfinite(w.end) and 0 <= w.start < w.end):
            raise ValueError(f"window {i} (index {w.index}) has bad times {w.start}..{w.end}")
        if w.start < previous_end - 1e-9:
            raise ValueError(f"window {i} (index {w.index}) overlaps or precedes the one before")
        previous_end = w.end


def _prepare(
    raw: Samples, raw_rate: int, speed: float, sample_rate: int, policy: FitPolicy
) -> _Take:
    """Resample, cut the leading silence (window starts are the contract), find speech."""
    x = resample(np.asarray(raw, dtype=np.float32).reshape(-1), raw_rate, sample_rate)
    bounds = speech_bounds(x, sample_rate, policy.silence_threshold_db)
    if bounds is None:
        return _Take(samples=np.zeros(0, dtype=np.float32), speed=speed, content_end=None)
    first, end = bounds
    cut = max(0, first - round(policy.lead_pad * sample_rate))
    x = x[cut:]
    content_end = min(len(x), end - cut + round(policy.tail_pad * sample_rate))
    return _Take(samples=x, speed=speed, content_end=content_end)


def _shape(take: _Take, own_n: int, limit_n: int, sample_rate: int, policy: FitPolicy) -> _Shaped:
    """Remedies 2-5 on a take: trim silence, borrow, stretch, truncate."""
    x = take.samples
    remedies: list[str] = []
    ratio = 1.0
    overrun = 0.0
    if take.content_end is not None and len(x) > own_n:
        if take.content_end < len(x):
            x = x[: take.content_end]
            remedies.append("trim_silence")
        room = own_n
        if len(x) > own_n and limit_n > own_n:
            remedies.append("borrow_silence")
            room = limit_n
        if len(x) > room:
            need = len(x) / max(room, 1)
            if need >= _MIN_STRETCH:
                ratio = min(need, policy.max_stretch)
                x = stretch(x, sample_rate, ratio)
                remedies.append("time_stretch")
                if need <= policy.max_stretch:
                    # Rubber Band lands within a sample or two of the target.
                    x = fit_length(x, room)
            if len(x) > room:
                overrun = (len(x) - room) / sample_rate
                x = fade_out(x[:room].copy(), round(policy.fade_out * sample_rate))
                remedies.append("truncate")
    speech = speech_bounds(x, sample_rate, policy.silence_threshold_db)
    return _Shaped(
        samples=x, stretch=ratio, remedies=tuple(remedies), overrun=overrun, speech=speech
    )


async def _fit_unit(
    unit: Sequence[Window],
    limit: float,
    synthesize: Synthesize,
    sample_rate: int,
    min_speed: float,
    max_speed: float,
    policy: FitPolicy,
) -> tuple[Clip, list[SegmentTiming], float]:
    """Returns the clip, the members' timings, and speech minus window duration (s)."""
    text = " ".join(w.text.strip() for w in unit)
    start, own_end = unit[0].start, unit[-1].end
    s0 = round(start * sample_rate)
    own_n = round(own_end * sample_rate) - s0
    limit_n = max(own_n, round(limit * sample_rate) - s0)

    async def take_at(speed: float) -> _Take:
        raw, rate = await synthesize(text, speed)
        return await asyncio.to_thread(_prepare, raw, rate, speed, sample_rate, policy)

    # (1) Native rate. Never below normal: slowed speech is the "drawl" users hate, and
    # a short line simply ends early. Whether to speed up is judged on the speech
    # itself: trailing silence costs nothing to cut.
    base = min(max(1.0, min_speed), max_speed)
    top = max(base, min(max_speed, policy.max_native_speed))
    take = await take_at(base)
    used_rate = False
    for _ in range(policy.max_resynthesis):
        if take.content_end is None or take.content_end <= own_n:
            break
        want = take.speed * take.content_end / max(own_n, 1) * (1.0 + policy.rate_headroom)
        speed = min(top, want)
        if speed < take.speed + _MIN_RATE_STEP:
            break
        take = await take_at(speed)
        used_rate = True

    shaped = await asyncio.to_thread(_shape, take, own_n, limit_n, sample_rate, policy)
    remedies = (("native_rate",) if used_rate else ()) + shaped.remedies
    if shaped.speech is None:
        speech_start = speech_end = start
    else:
        speech_start = start + shaped.speech[0] / sample_rate
        speech_end = start + shaped.speech[1] / sample_rate
    deviation = (speech_end - speech_start) - (own_end - start)
    indexes = [w.index for w in unit]
    timings = [
        SegmentTiming(
            index=w.index,
            window_start=w.start,
            window_end=w.end,
            speech_start=speech_start,
            speech_end=speech_end,
            speed=take.speed,
            stretch=shaped.stretch,
            remedies=remedies,
            overrun=shaped.overrun,
            stitched_with=tuple(i for i in indexes if i != w.index),
        )
        for w in unit
    ]
    return Clip(start=start, samples=shaped.samples), timings, deviation


@dataclass(frozen=True, slots=True)
class Fitted:
    """One utterance, fitted: a stitched group of windows is one clip."""

    clip: Clip
    timings: list[SegmentTiming]  # its windows', in order
    # Speech duration minus the (joint) window's, seconds.
    deviation: float

    @property
    def off(self) -> bool:
        """Off by more than 0.3 s, either way (IWSLT 2023 isochrony)."""
        return abs(self.deviation) > OFF_SECONDS


# The IWSLT 2023 dubbing track's isochrony threshold.
OFF_SECONDS = 0.3


def summarize(fitted: Sequence[tuple[Sequence[SegmentTiming], float]]) -> TimingSummary:
    """The summary over utterances given as (timings, deviation) pairs, in order."""
    timings = [t for ts, _ in fitted for t in ts]
    n = len(timings)
    shorter = sum(len(ts) for ts, dev in fitted if dev < -OFF_SECONDS)
    longer = sum(len(ts) for ts, dev in fitted if dev > OFF_SECONDS)
    honoured = [
        abs(ts[0].speech_start - ts[0].window_start)
        for ts, _ in fitted
        if ts and ts[0].speech_end > ts[0].speech_start
    ]
    stretches = [t.stretch for t in timings]
    return TimingSummary(
        segments=n,
        share_off_by_more_than_0_3s=(shorter + longer) / n if n else 0.0,
        share_shorter_by_more_than_0_3s=shorter / n if n else 0.0,
        share_longer_by_more_than_0_3s=longer / n if n else 0.0,
        mean_stretch=float(np.mean(stretches)) if n else 1.0,
        max_stretch=max(stretches, default=1.0),
        truncations=sum(1 for t in timings if "truncate" in t.remedies),
        max_start_offset=max(honoured, default=0.0),
    )


def _limits(
    units: Sequence[Sequence[Window]], policy: FitPolicy, horizon: float | None
) -> list[float]:
    """How far each utterance may run: its own end, or borrowed silence up to the next."""
    limits: list[float] = []
    for i, unit in enumerate(units):
        end = unit[-1].end
        if policy.use_precise_timing:
            limits.append(end)
            continue
        following = units[i + 1][0].start if i + 1 < len(units) else horizon
        cap = end + policy.max_borrow
        limits.append(max(end, min(cap, following) if following is not None else cap))
        if not math.isfinite(limits[-1]):
            # The last utterance with unbounded borrowing: it may run as long as it is.
            limits[-1] = end + 3600.0
    return limits


async def fit_stream(
    windows: Sequence[Window],
    synthesize: Synthesize,
    *,
    sample_rate: int,
    min_speed: float,
    max_speed: float,
    policy: FitPolicy = DEFAULT_POLICY,
    concurrency: int = 4,
    horizon: float | None = None,
    lookahead: int | None = None,
) -> AsyncIterator[Fitted]:
    """Synthesize `windows` (ordered by start, not overlapping), fit each into place,
    and yield the utterances in order as they are ready.

    `concurrency` bounds the synthesis calls in flight; at most `lookahead`
    utterances (default 4 x concurrency) are fitted ahead of the consumer, so a
    programme of any length is held only a few utterances at a time. `horizon`, for
    callers that fit a long transcript in batches, is the start of the first window
    after this batch: the last utterance may borrow silence up to it (None: up to
    policy.max_borrow after its end).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    ahead = lookahead if lookahead is not None else 4 * concurrency
    if ahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {ahead}")
    _validate(windows, min_speed, max_speed)
    units = _units(windows, policy)
    limits = _limits(units, policy, horizon)
    slots = asyncio.Semaphore(concurrency)

    async def run(i: int) -> Fitted:
        # Semaphore waiters are served in order, so earlier utterances go first.
        async with slots:
            clip, timings, deviation = await _fit_unit(
                units[i], limits[i], synthesize, sample_rate, min_speed, max_speed, policy
            )
        return Fitted(clip, timings, deviation)

    pending: deque[asyncio.Task[Fitted]] = deque()
    next_unit = 0
    try:
        while next_unit < len(units) or pending:
            while next_unit < len(units) and len(pending) < ahead:
                pending.append(asyncio.create_task(run(next_unit)))
                next_unit += 1
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def fit(
    windows: Sequence[Window],
    synthesize: Synthesize,
    *,
    sample_rate: int,
    min_speed: float,
    max_speed: float,
    policy: FitPolicy = DEFAULT_POLICY,
    concurrency: int = 4,
    horizon: float | None = None,
) -> tuple[list[Clip], list[SegmentTiming], TimingSummary]:
    """`fit_stream`, collected: one clip per utterance ordered by start, the timings
    in window order, and the summary. Holds every clip: for short transcripts."""
    fitted = [
        f
        async for f in fit_stream(
            windows,
            synthesize,
            sample_rate=sample_rate,
            min_speed=min_speed,
            max_speed=max_speed,
            policy=policy,
            concurrency=concurrency,
            horizon=horizon,
            lookahead=max(1, len(windows)),
        )
    ]
    clips = [f.clip for f in fitted]
    timings = [t for f in fitted for t in f.timings]
    return clips, timings, summarize([(f.timings, f.deviation) for f in fitted])
