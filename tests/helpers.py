"""Builders and assertions shared by the integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from dubbing import errors, jobstate
from dubbing.v1 import dubbing_pb2 as pb


def segment(start: float, end: float, text: str, speaker: str = "") -> pb.Segment:
    return pb.Segment(
        start=jobstate.duration(start), end=jobstate.duration(end), text=text, speaker=speaker
    )


FRENCH_LINES = [
    "Bonjour à tous et bienvenue.",
    "Aujourd'hui nous parlons du doublage.",
    "La voix doit tenir dans sa fenêtre.",
    "Merci de votre attention.",
]


def transcript_request(
    segments: Sequence[pb.Segment] | None = None,
    *,
    language: str = "fr",
    provider: str = "",
    request_id: str = "",
    output_format: int = pb.AUDIO_FORMAT_WAV,
    sample_rate: int = 0,
    gender: int = pb.GENDER_FEMALE,
) -> pb.DubRequest:
    if segments is None:
        segments = [
            segment(0.5 + 3.0 * i, 3.0 + 3.0 * i, text) for i, text in enumerate(FRENCH_LINES)
        ]
    return pb.DubRequest(
        request_id=request_id,
        target_language=language,
        provider=provider,
        transcript=pb.TranscriptDubbing(
            script=pb.Transcript(segments=segments),
            voice=pb.Voice(gender=gender),  # type: ignore[arg-type]
            output=pb.OutputOptions(format=output_format, sample_rate_hz=sample_rate),  # type: ignore[arg-type]
        ),
    )


def long_request(n: int, *, language: str = "fr") -> pb.DubRequest:
    """A transcript long enough that a worker is still busy with it when a test acts."""
    segs = [segment(2.0 * i, 2.0 * i + 1.8, FRENCH_LINES[i % len(FRENCH_LINES)]) for i in range(n)]
    return transcript_request(segs, language=language)


@dataclass(frozen=True)
class RichError:
    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    violations: list[tuple[str, str]]

    @property
    def fields(self) -> set[str]:
        return {f for f, _ in self.violations}


async def rich_error(err: grpc.aio.AioRpcError) -> RichError:
    """The google.rpc.Status details of a failed call (AIP-193)."""
    st = rpc_status.from_call(err)  # type: ignore[arg-type]  # AioRpcError has the same accessors
    assert st is not None, f"no rich status on {err.code()}: {err.details()}"
    info = errors.error_info(st)
    assert info is not None, "every error must carry an ErrorInfo"
    return RichError(
        code=err.code(),
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        violations=errors.field_violations(st),
    )


class RecordingContext:
    """Stands in for grpc.aio.ServicerContext: records the status it is aborted with."""

    status: grpc.Status | None = None

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise grpc.aio.AbortError()
