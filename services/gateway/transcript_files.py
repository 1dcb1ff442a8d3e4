"""Reading a ``TranscriptFile`` in a SubmitDub request into segments.

The gateway does this before validation, with the same readers the CLI uses
(:mod:`dubbing.transcripts`), so a file and its segments are held to the same
rules. The job then stores and publishes the segments: workers never see the file.
Idempotency is still judged on the request as sent (file included).
"""

from __future__ import annotations

from dubbing import transcripts
from dubbing.jobstate import duration
from dubbing.v1 import dubbing_pb2 as pb

# Largest transcript file accepted. A 3-hour programme's SRT is a few hundred KiB;
# the gRPC server's receive limit is set above this so the file reaches us.
MAX_FILE_BYTES = 8 * 1024 * 1024

FILE_FIELD = "request.transcript.file"

# Warnings returned at most: one per changed cue could be hundreds of thousands for a
# messy file at the size limit, more than a response may hold. The last says how many
# more there were.
MAX_WARNINGS = 100


class UnreadableFile(Exception):
    """The file cannot be read; `field` and `description` make a BadRequest violation."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def expand(request: pb.DubRequest) -> tuple[pb.DubRequest, list[str]]:
    """`request` with its transcript file read into segments, and the reader's warnings.

    Requests without a file come back unchanged, with no warnings.
    """
    if request.WhichOneof("work") != "transcript":
        return request, []
    work = request.transcript
    if work.WhichOneof("source") != "file":
        return request, []
    file = work.file
    if len(file.content) > MAX_FILE_BYTES:
        raise UnreadableFile(
            f"{FILE_FIELD}.content", f"is {len(file.content)} bytes; at most {MAX_FILE_BYTES}"
        )
    if file.csv_fps != 0 and not transcripts.valid_fps(file.csv_fps):
        raise UnreadableFile(
            f"{FILE_FIELD}.csv_fps",
            f"must be 0 (infer) or a frame rate above 0 and at most {transcripts.MAX_FPS:g}",
        )
    try:
        fmt = file.format.lower() or transcripts.format_for(file.filename)
    except transcripts.TranscriptFormatError as exc:
        raise UnreadableFile(f"{FILE_FIELD}.filename", str(exc)) from None
    if fmt not in transcripts.FORMATS.values():
        supported = ", ".join(sorted(transcripts.FORMATS.values()))
        raise UnreadableFile(
            f"{FILE_FIELD}.format", f"unknown format {transcripts.brief(fmt)}; one of {supported}"
        )
    try:
        cues, notes = transcripts.normalize(
            transcripts.parse(file.content, format=fmt, csv_fps=file.csv_fps or None)
        )
    except transcripts.TranscriptFormatError as exc:
        raise UnreadableFile(f"{FILE_FIELD}.content", str(exc)) from None

    expanded = pb.DubRequest()
    expanded.CopyFrom(request)
    # Setting `transcript` clears `file`: they are one oneof.
    expanded.transcript.script.CopyFrom(
        pb.Transcript(
            segments=[
                pb.Segment(
                    start=duration(c.start), end=duration(c.end), text=c.text, speaker=c.speaker
                )
                for c in cues
            ]
        )
    )
    return expanded, _capped(notes)


def _capped(notes: list[str]) -> list[str]:
    if len(notes) <= MAX_WARNINGS:
        return notes
    kept = notes[: MAX_WARNINGS - 1]
    return [*kept, f"... and {len(notes) - len(kept)} more changes like these"]
