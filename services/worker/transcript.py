"""Transcript dubbing: synthesize the segments, fit each into its window, encode one track.

The fitting (remedies, bounds, stitching, precise timing) is :mod:`worker.timing`;
this module turns the request into its inputs, keeps count of what the provider was
asked for, and turns its report into the API's ``TimingReport``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dubbing.conventions import NAME_BY_GENDER
from dubbing.errors import Reason
from dubbing.jobstate import NAME_BY_FORMAT, duration, seconds
from dubbing.v1 import dubbing_pb2 as pb
from worker import assembly, mixdown, timing
from worker.assembly import Samples
from worker.background import BackgroundFetcher, BackgroundUnavailable
from worker.loudness import DEFAULT_LOUDNESS_LUFS, LoudnessMeter
from worker.mixdown import PcmFile
from worker.providers import Capabilities, Gender, Provider, SynthesisRequest

DEFAULT_SAMPLE_RATE = 24_000
_REMEDIES = {
    "native_rate": pb.TIMING_REMEDY_NATIVE_RATE,
    "trim_silence": pb.TIMING_REMEDY_TRIM_SILENCE,
    "borrow_silence": pb.TIMING_REMEDY_BORROW_SILENCE,
    "time_stretch": pb.TIMING_REMEDY_TIME_STRETCH,
    "truncate": pb.TIMING_REMEDY_TRUNCATE,
}

Report = Callable[[str, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DubbedAudio:
    # The encoded programme, in the job's work directory.
    path: Path
    format: str
    sample_rate_hz: int
    duration_seconds: float
    # Seconds of synthesized speech that ended up in the output (the billing unit).
    generated_audio_seconds: float
    characters: int
    # base64 of the serialized dubbing.v1.TimingReport, as the bus carries it.
    timing: str
    loudness_lufs: float
    channels: int = 1


def policy_for(options: pb.TimingOptions) -> timing.FitPolicy:
    """The job's fitting policy; unset options keep the engine's defaults."""
    defaults = timing.FitPolicy()
    return timing.FitPolicy(
        max_stretch=min(options.max_stretch_ratio or defaults.max_stretch, timing.HARD_MAX_STRETCH),
        use_stitching=options.use_stitching if options.HasField("use_stitching") else True,
        use_precise_timing=options.use_precise_timing,
    )


def timing_report(
    segments: list[timing.SegmentTiming], summary: timing.TimingSummary, base_speed: float = 1.0
) -> pb.TimingReport:
    return pb.TimingReport(
        summary=pb.TimingSummary(
            segments=summary.segments,
            share_duration_error_over300ms=summary.share_off_by_more_than_0_3s,
            share_shorter_over300ms=summary.share_shorter_by_more_than_0_3s,
            share_longer_over300ms=summary.share_longer_by_more_than_0_3s,
            mean_stretch=summary.mean_stretch,
            max_stretch=summary.max_stretch,
            truncations=summary.truncations,
            max_start_offset=duration(summary.max_start_offset),
        ),
        segments=[
            pb.SegmentTiming(
                index=t.index,
                window_start=duration(t.window_start),
                window_end=duration(t.window_end),
                speech_start=duration(t.speech_start),
                speech_end=duration(t.speech_end),
                speed=t.speed * base_speed,  # the rate the provider was asked for
                stretch=t.stretch,
                remedies=[_REMEDIES[r] for r in t.remedies],
                overrun=duration(t.overrun),
                stitched_with=list(t.stitched_with),
            )
            for t in segments
        ],
    )


async def _prepare_background(
    fetcher: BackgroundFetcher,
    source: pb.BackgroundAudio,
    workdir: Path,
    rate: int,
    channels: int,
) -> tuple[PcmFile, bool]:
    """The decoded background, and whether it is mono in all but name."""
    pcm = await fetcher.prepare(source, workdir, rate, channels=channels)
    return pcm, channels == 1 or await asyncio.to_thread(pcm.is_dual_mono)


def _under_the_speech(
    options: pb.BackgroundAudio, pcm: PcmFile, speech: list[tuple[float, float]]
) -> mixdown.Background:
    """The background as the job asked for it, ducked where the speech was placed."""
    depth = options.ducking_db if options.HasField("ducking_db") else mixdown.Ducking().depth_db
    envelope = (
        mixdown.DuckingEnvelope(speech, mixdown.Ducking(depth_db=depth), pcm.sample_rate)
        if depth > 0
        else None
    )
    return mixdown.Background(pcm, options.gain_db, envelope)


# Where each stage of a transcript job starts on the job's 0..1 progress (synthesis
# fills the span up to mixing: it is most of the work).
PROGRESS: dict[str, float] = {
    "synthesizing": 0.0,
    "mixing": 0.85,
    "uploading": 0.9,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a transcript job's request decides, before any work is done."""

    windows: list[timing.Window]
    language: str
    gender: Gender
    voice_id: str
    # The caller's base rate, within the provider's range: the engine works in rates
    # relative to it, so its "1.0" is what the caller asked for.
    base_speed: float
    min_speed: float
    max_speed: float
    policy: timing.FitPolicy
    fmt: str
    sample_rate: int
    loudness_lufs: float
    channels: int  # 0: follow the background
    background: pb.BackgroundAudio | None


def plan(request: pb.DubRequest, caps: Capabilities) -> Plan:
    """The job's plan: pure, from the request and what the provider can do."""
    work = request.transcript
    voice = work.voice
    base_speed = voice.settings.speed if voice.settings.HasField("speed") else 1.0
    base_speed = min(caps.max_speed, max(caps.min_speed, base_speed))
    return Plan(
        windows=[
            timing.Window(i, seconds(s.start), seconds(s.end), s.text, s.speaker)
            for i, s in enumerate(work.script.segments)
        ],
        language=request.target_language,
        gender=Gender(NAME_BY_GENDER.get(voice.gender, Gender.FEMALE.value)),
        voice_id=voice.voice_id,
        base_speed=base_speed,
        min_speed=caps.min_speed / base_speed,
        max_speed=caps.max_speed / base_speed,
        policy=policy_for(work.timing),
        fmt=NAME_BY_FORMAT.get(work.output.format, "wav"),
        sample_rate=work.output.sample_rate_hz or DEFAULT_SAMPLE_RATE,
        loudness_lufs=work.output.loudness_lufs or DEFAULT_LOUDNESS_LUFS,
        channels=work.output.channels,
        background=work.background if work.HasField("background") else None,
    )


@dataclass(frozen=True, slots=True)
class Placed:
    """The speech, fitted and placed on a track on disk, and the background beside it."""

    dub: PcmFile
    meter: LoudnessMeter
    fitted: list[tuple[list[timing.SegmentTiming], float]]
    speech: list[tuple[float, float]]  # where each utterance's speech really is
    speech_seconds: float
    characters: int
    background: PcmFile | None
    background_dual_mono: bool


async def synthesize_and_place(
    job: Plan,
    provider: Provider,
    report: Report,
    workdir: Path,
    *,
    fetcher: BackgroundFetcher | None = None,
) -> Placed:
    """Synthesize every window, fit it (``worker.timing``) and place it on the dub
    track, while the background is fetched and decoded beside it."""
    rate = job.sample_rate
    characters = 0
    takes = 0
    span = PROGRESS["mixing"] - PROGRESS["synthesizing"]

    async def synthesize(text: str, speed: float) -> tuple[npt.NDArray[np.float32], int]:
        nonlocal characters, takes
        speech = await provider.synthesize(
            SynthesisRequest(
                text=text,
                language=job.language,
                gender=job.gender,
                voice_id=job.voice_id,
                speed=speed * job.base_speed,
            )
        )
        characters += speech.characters
        takes += 1
        # Re-takes at another rate make this an estimate; it only feeds progress.
        done = min(1.0, takes / len(job.windows))
        await report("synthesizing", PROGRESS["synthesizing"] + span * done)
        return speech.samples, speech.sample_rate

    # The background is fetched and decoded (ffmpeg, another core) while the
    # speech is synthesized and fitted.
    bg_task: asyncio.Task[tuple[PcmFile, bool]] | None = None
    if job.background is not None:
        if fetcher is None:
            raise BackgroundUnavailable(
                "this worker cannot fetch background audio", reason=Reason.BACKGROUND_UNAVAILABLE
            )
        # Stereo unless the caller asked for mono; channels=0 settles it once decoded.
        bg_channels = 1 if job.channels == 1 else 2
        bg_task = asyncio.create_task(
            _prepare_background(fetcher, job.background, workdir, rate, bg_channels)
        )

    dub = PcmFile(workdir / "dub.f32", rate)
    meter = LoudnessMeter(rate)

    def sink(x: Samples) -> None:
        dub.append(x)
        meter.add(x)

    writer = assembly.TrackWriter(rate, sink)
    fitted: list[tuple[list[timing.SegmentTiming], float]] = []
    speech: list[tuple[float, float]] = []
    try:
        async for unit in timing.fit_stream(
            job.windows,
            synthesize,
            sample_rate=rate,
            min_speed=job.min_speed,
            max_speed=job.max_speed,
            policy=job.policy,
        ):
            # Off the event loop: the meter filters every sample placed.
            await asyncio.to_thread(writer.add, unit.clip.start, unit.clip.samples)
            fitted.append((unit.timings, unit.deviation))
            # Where the utterance's speech really is (its members share it).
            speech.append((unit.timings[0].speech_start, unit.timings[0].speech_end))
        background_pcm, bg_dual_mono = await bg_task if bg_task is not None else (None, True)
        total = max(w.end for w in job.windows)
        if background_pcm is not None:
            total = max(total, background_pcm.seconds)
        placement = await asyncio.to_thread(writer.close, total)
    finally:
        if bg_task is not None:
            # Also when it already failed and nothing awaited it (the job was cancelled
            # first): gathering retrieves its exception, which asyncio would else log.
            bg_task.cancel()
            await asyncio.gather(bg_task, return_exceptions=True)
        dub.finish()
    return Placed(
        dub=dub,
        meter=meter,
        fitted=fitted,
        speech=speech,
        speech_seconds=placement.speech_seconds,
        characters=characters,
        background=background_pcm,
        background_dual_mono=bg_dual_mono,
    )


async def render(job: Plan, placed: Placed, report: Report, workdir: Path) -> DubbedAudio:
    """Mix the background under the placed speech, bring it to the loudness target,
    encode it (``worker.mixdown``) and report how each segment was fitted."""
    await report("mixing", PROGRESS["mixing"])
    channels = job.channels
    if channels == 0:
        channels = 1 if placed.background_dual_mono else 2
    background = (
        _under_the_speech(job.background, placed.background, placed.speech)
        if job.background is not None and placed.background is not None
        else None
    )
    out_path = workdir / f"dub.{assembly.suffix_for(job.fmt)}"
    loudness = await mixdown.render(
        placed.dub,
        placed.meter,
        target_lufs=job.loudness_lufs,
        out_path=out_path,
        fmt=job.fmt,
        out_sample_rate=job.sample_rate,
        background=background,
        channels=channels,
    )
    timings = [t for ts, _ in placed.fitted for t in ts]
    report_pb = timing_report(timings, timing.summarize(placed.fitted), job.base_speed)
    samples = max(placed.dub.samples, placed.background.samples if placed.background else 0)
    return DubbedAudio(
        path=out_path,
        format=job.fmt,
        sample_rate_hz=job.sample_rate,
        duration_seconds=samples / job.sample_rate,
        generated_audio_seconds=placed.speech_seconds,
        characters=placed.characters,
        timing=base64.b64encode(report_pb.SerializeToString()).decode(),
        loudness_lufs=loudness.after,
        channels=channels,
    )


async def dub_transcript(
    request: pb.DubRequest,
    provider: Provider,
    report: Report,
    workdir: Path,
    *,
    fetcher: BackgroundFetcher | None = None,
) -> DubbedAudio:
    """Dub a transcript job into an encoded file in `workdir` (which the caller owns
    and removes): :func:`plan`, :func:`synthesize_and_place`, :func:`render`. Memory
    stays bounded whatever the programme's length: clips stream onto a track on disk,
    and `worker.mixdown` mixes, normalises and encodes it."""
    job = plan(request, provider.capabilities)
    placed = await synthesize_and_place(job, provider, report, workdir, fetcher=fetcher)
    return await render(job, placed, report, workdir)
