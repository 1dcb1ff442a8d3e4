"""Transcript dubbing: synthesize every segment and lay it on one track at its start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dubbing.jobstate import NAME_BY_FORMAT
from dubbing.v1 import dubbing_pb2 as pb
from worker import assembly
from worker.providers import Gender, Provider, SynthesisRequest

DEFAULT_SAMPLE_RATE = 24_000
_GENDERS = {
    pb.GENDER_FEMALE: Gender.FEMALE,
    pb.GENDER_MALE: Gender.MALE,
    pb.GENDER_NEUTRAL: Gender.NEUTRAL,
}

Report = Callable[[str, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DubbedAudio:
    data: bytes
    format: str
    sample_rate_hz: int
    duration_seconds: float
    # Seconds of synthesized speech that ended up in the output (the billing unit).
    generated_audio_seconds: float
    characters: int
    truncated_segments: int


def _seconds(d: object) -> float:
    return float(d.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


async def dub_transcript(request: pb.DubRequest, provider: Provider, report: Report) -> DubbedAudio:
    work = request.transcript
    segments = list(work.transcript.segments)
    caps = provider.capabilities
    voice = work.voice
    gender = _GENDERS.get(voice.gender, Gender.FEMALE)
    speed = voice.settings.speed if voice.settings.HasField("speed") else 1.0
    speed = min(caps.max_speed, max(caps.min_speed, speed))
    fmt = NAME_BY_FORMAT.get(work.output.format, "wav")
    rate = work.output.sample_rate_hz or DEFAULT_SAMPLE_RATE

    clips: list[assembly.PlacedClip] = []
    characters = 0
    for index, segment in enumerate(segments):
        speech = await provider.synthesize(
            SynthesisRequest(
                text=segment.text,
                language=request.target_language,
                gender=gender,
                voice_id=voice.voice_id,
                speed=speed,
            )
        )
        characters += speech.characters
        clips.append(
            assembly.PlacedClip(
                start=_seconds(segment.start),
                samples=assembly.resample(speech.samples, speech.sample_rate, rate),
                sample_rate=rate,
            )
        )
        await report("synthesizing", 0.8 * (index + 1) / len(segments))

    await report("mixing", 0.85)
    total = max(_seconds(s.end) for s in segments)
    track, placement = assembly.place_clips(clips, sample_rate=rate, total_duration=total)
    data = await assembly.encode(track, rate, fmt, rate)
    return DubbedAudio(
        data=data,
        format=fmt,
        sample_rate_hz=rate,
        duration_seconds=len(track) / rate,
        generated_audio_seconds=placement.speech_seconds,
        characters=characters,
        truncated_segments=placement.truncated,
    )
