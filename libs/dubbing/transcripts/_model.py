"""The value types every transcript reader produces (:class:`Cue` and its error), and the
rules every reader holds its input to: the range of a time, what text is, and how much of
the input an error may quote."""

from __future__ import annotations

import math
import re
import reprlib
import unicodedata
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


# The latest time a reader accepts: 100,000 hours. Far beyond any programme (the service
# takes 6 hours), and small enough that every later conversion of it (to nanoseconds, to a
# protobuf Duration) is exact. Readers bound the digits of hours to five, which keeps every
# clock time below it and int() away from numbers too long to convert.
MAX_HOURS = 100_000
MAX_SECONDS = MAX_HOURS * 3600


def checked_seconds(value: float, what: str, *, line: int | None = None) -> float:
    """`value` (seconds) as a float, or a TranscriptFormatError naming `what` when it is not
    a number, negative, or :data:`MAX_SECONDS` or more (infinity included: digits beyond a
    float's range read as it). Takes ints of any size: JSON has them."""
    if (isinstance(value, float) and math.isnan(value)) or value < 0:
        raise TranscriptFormatError(
            f"{what} must be a finite, non-negative number, got {brief(value)}", line=line
        )
    if value >= MAX_SECONDS:
        raise TranscriptFormatError(
            f"{what} is too large: times must be below {MAX_HOURS:,} hours", line=line
        )
    return float(value)


_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4
_MAX_SHOWN_BITS = 180  # about 54 digits


def brief(value: object) -> str:
    """`value` as an error message may quote it: its repr, cut to a few dozen characters
    whatever its size or depth (errors travel in size-limited gRPC trailers)."""
    # reprlib cuts a long int's repr, but only after making it, which Python refuses past
    # 4,300 digits; anything over ~54 digits is described instead.
    if isinstance(value, int) and value.bit_length() > _MAX_SHOWN_BITS:
        return f"a number of about {round(value.bit_length() * math.log10(2))} digits"
    return _REPR.repr(value)


# C0 and C1 control characters other than tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode general categories that show: letters, numbers, punctuation and symbols (not
# separators, marks on their own, or format characters such as U+200B ZERO WIDTH SPACE).
_VISIBLE = frozenset("LNPS")


def is_blank(text: str) -> bool:
    """True when `text` has no visible character: empty, spaces, invisible characters."""
    return not any(unicodedata.category(c)[0] in _VISIBLE for c in text)


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a segment's text, or None. The one rule the readers, the client
    and the gateway's validation share: it must have a visible character and no control
    characters (tab and line breaks aside)."""
    control = _CONTROL.search(text)
    if control is not None:
        return f"must not contain control characters (found U+{ord(control[0]):04X})"
    if is_blank(text):
        return "must not be empty (or only spaces and invisible characters)"
    return None
