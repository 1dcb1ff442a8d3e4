"""The value types every transcript reader produces: :class:`Cue` and its error."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cue:
    """One timed piece of text. ``line`` is the 1-based source line it came from (0: unknown).

    For SRT and WebVTT that is the cue's timing (``-->``) line, since the errors that
    name it are about its times; for CSV it is the line where the row starts.
    """

    start: float
    end: float
    text: str
    speaker: str = ""
    line: int = 0


class TranscriptFormatError(ValueError):
    """A transcript cannot be read. ``str()`` is ``"line 12: bad timestamp ..."`` when the
    offending line is known, else just the message."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


def clock(seconds: float) -> str:
    """``h:mm:ss.mmm`` for messages, so notes read like the timestamps in the source."""
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"
