"""The ElevenLabs manual-dubbing CSV (``speaker,start_time,end_time,transcription,translation``).

Read with the stdlib ``csv`` module (quoted fields may hold commas, quotes and line
breaks). The header is the first non-blank row; names are matched case-insensitively
and in any order. ``start_time``, ``end_time`` and ``transcription`` are required,
``speaker`` and ``translation`` optional, other columns ignored. The spoken text is the
translation when that column exists and the row's value is not blank, else the
transcription. Blank rows are skipped.

A time is one of:

- seconds: ``12``, ``0.10000``;
- ``h:mm:ss,mmm`` (``.`` accepted for ``,``): ``0:00:01,000``;
- ``h:mm:ss:ff``, a frame number: needs a frame rate, ``csv_fps`` when given. Otherwise
  it is inferred only when it is unambiguous: the highest frame number in the file
  plus one must be a standard rate (24, 25, 30, 50 or 60), i.e. the file shows the last
  frame of a second at least once. A file whose frames stop short of that (say, at 12)
  could be any rate above, so it is refused with an error asking for ``csv_fps``
  rather than guessed. (29.97 fps drop-frame timecode is read as 30 fps.) A rate that is
  given must be above 0 and at most :data:`MAX_FPS` (240), the rule the API holds every
  ``csv_fps`` to (:func:`valid_fps`).

Times must be below 100,000 hours (hours have at most five digits).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

from ._model import Cue, TranscriptFormatError, brief, checked_seconds

REQUIRED = ("start_time", "end_time", "transcription")
OPTIONAL = ("speaker", "translation")
STANDARD_FPS = (24, 25, 30, 50, 60)
# Highest frame rate of h:mm:ss:frame timecodes, in the CSV files read here and in the
# ones a media job hands to a provider (MediaDubbing.csv_fps).
MAX_FPS = 240.0

_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_CLOCK = re.compile(r"^(\d{1,5}):(\d{1,2}):(\d{1,2})[,.](\d{1,3})$")
_FRAMES = re.compile(r"^(\d{1,5}):(\d{1,2}):(\d{1,2}):(\d{1,3})$")
_FORMS = "seconds ('1.5'), 'h:mm:ss,mmm' or 'h:mm:ss:frame'"


@dataclass(frozen=True, slots=True)
class _Time:
    """A parsed time: ``seconds`` plus ``frame`` frames (at a rate decided later)."""

    seconds: float
    frame: int | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    start: _Time
    end: _Time
    text: str
    speaker: str


def valid_fps(fps: float) -> bool:
    """Whether `fps` is a frame rate a CSV's timecodes may have: above 0, at most MAX_FPS."""
    return math.isfinite(fps) and 0 < fps <= MAX_FPS


def _time(value: str, column: str, line: int) -> _Time:
    text = value.strip()
    if _SECONDS.match(text):
        return _Time(checked_seconds(float(text), column, line=line))
    match = _CLOCK.match(text) or _FRAMES.match(text)
    if match is None:
        raise TranscriptFormatError(f"bad {column} {brief(value)}: expected {_FORMS}", line=line)
    hours, minutes, secs, last = match.groups()
    if int(minutes) >= 60 or int(secs) >= 60:
        raise TranscriptFormatError(
            f"bad {column} {brief(value)}: minutes and seconds must be below 60", line=line
        )
    whole = int(hours) * 3600 + int(minutes) * 60 + int(secs)
    if match.re is _CLOCK:
        return _Time(whole + int(last) / 10.0 ** len(last))
    return _Time(float(whole), frame=int(last))


def _field(fields: list[str], header: dict[str, int], name: str) -> str:
    position = header.get(name)
    return fields[position] if position is not None else ""


def _frame_rate(rows: list[_Row], csv_fps: float | None) -> float | None:
    """The rate for frame timecodes: ``csv_fps``, else inferred (see the module doc)."""
    framed = [
        (t.frame, row.line) for row in rows for t in (row.start, row.end) if t.frame is not None
    ]
    if csv_fps is not None:
        if not valid_fps(csv_fps):
            raise TranscriptFormatError(
                f"csv_fps must be a frame rate above 0 and at most {MAX_FPS:g}, got {csv_fps!r}"
            )
        for frame, line in framed:
            if frame >= csv_fps:
                raise TranscriptFormatError(
                    f"frame {frame} does not exist at {csv_fps:g} fps (frames are 0 to "
                    f"{math.ceil(csv_fps) - 1})",
                    line=line,
                )
        return csv_fps
    if not framed:
        return None
    top, line = max(framed)
    if top + 1 in STANDARD_FPS:
        return float(top + 1)
    rates = ", ".join(str(r) for r in STANDARD_FPS)
    raise TranscriptFormatError(
        f"cannot infer the frame rate of 'h:mm:ss:frame' times: the highest frame is {top}, "
        f"so it is not one of {rates} fps with its last frame shown; give the rate "
        "(csv_fps, or --csv-fps on the command line)",
        line=line,
    )


def parse_csv(text: str, *, csv_fps: float | None = None) -> list[Cue]:
    """Cues of a manual-dubbing CSV, in file order (see the module docstring)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: dict[str, int] | None = None
    header_line = 0
    width = 0
    rows: list[_Row] = []
    next_line = 1  # where the row reader.__next__ returns starts
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise TranscriptFormatError(f"not valid CSV: {exc}", line=reader.line_num) from None
        line, next_line = next_line, reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header_line, width = line, len(fields)
            header = {}
            for position, name in enumerate(fields):
                key = name.strip().lower()
                if key in header:
                    raise TranscriptFormatError(f"column {brief(key)} appears twice", line=line)
                header[key] = position
            missing = [name for name in REQUIRED if name not in header]
            if missing:
                raise TranscriptFormatError(
                    f"missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)}; the header must name "
                    f"{', '.join(REQUIRED)} (and may name {', '.join(OPTIONAL)})",
                    line=line,
                )
            continue
        if len(fields) != width:
            raise TranscriptFormatError(
                f"expected {width} fields like the header on line {header_line}, got {len(fields)}",
                line=line,
            )

        # Quoted fields may span lines; speech wants one line of text.
        translation = " ".join(_field(fields, header, "translation").split())
        rows.append(
            _Row(
                line=line,
                start=_time(_field(fields, header, "start_time"), "start_time", line),
                end=_time(_field(fields, header, "end_time"), "end_time", line),
                text=translation or " ".join(_field(fields, header, "transcription").split()),
                speaker=_field(fields, header, "speaker").strip(),
            )
        )
    if header is None:
        return []
    fps = _frame_rate(rows, csv_fps)

    def seconds(t: _Time) -> float:
        return t.seconds + (t.frame / fps if t.frame is not None and fps else 0.0)

    return [
        Cue(
            start=seconds(r.start),
            end=seconds(r.end),
            text=r.text,
            speaker=r.speaker,
            line=r.line,
        )
        for r in rows
    ]
