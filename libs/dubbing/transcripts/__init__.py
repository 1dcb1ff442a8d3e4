"""Transcripts in the common file formats: SubRip, WebVTT, manual-dubbing CSV and JSON.

Pure functions on what they are given (no file or network I/O)::

    cues = parse(data, format=format_for("talk.srt"))     # bytes in, cues in file order
    cues, notes = normalize(cues)                          # fit for the API, plus what changed

- :func:`decode_text` turns the file's bytes into text: a BOM decides, then strict
  UTF-8, then Windows-1252 unless it looks like mojibake, then charset-normalizer's
  guess (see ``_decode``). Undecodable input is an error naming the line.
- :func:`parse` reads one format (rules in ``_subtitles``, ``_csv`` and ``_json``).
  Errors are :class:`TranscriptFormatError` (a ValueError) naming the line when the
  format has lines: ``line 12: bad timing line '00:01:xx,000 --> 00:01:02,000' ...``.
- :func:`normalize` applies the policy below, so that what the service receives passes
  its checks (segments ordered by start, not overlapping, text not blank).

Normalization policy, in this order:

1. No cues at all (an empty file, a header only): ``TranscriptFormatError("no cues
   found")``.
2. A cue that ends at or before its start is an error naming its line: it is a broken
   file, not something to guess about.
3. Cues whose text is blank (empty after the readers removed markup, or only spaces and
   invisible characters such as U+200B) are dropped, with a note. If nothing is left: "no
   cues found". A cue whose text holds a control character (a NUL, say) is an error
   naming its line. Both follow :func:`text_problem`, the rule the service holds every
   segment's text to.
4. Cues are sorted by start time; the sort is stable, so cues that start together keep
   their file order. A note says when the file was out of order.
5. Overlaps: when a cue starts before the previous one ends, the previous one is ended
   where the next starts (note: ``line N: trimmed end from X to Y to avoid overlapping
   line M``), unless that would leave it shorter than :data:`MIN_DURATION` (0.2 s); then
   the two become one cue spanning both windows, texts joined with a space, keeping the
   first cue's line and speaker (note: ``line N: merged with line M ...``). Touching cues
   (one starts exactly where the other ends) are fine.
"""

from __future__ import annotations

from dataclasses import replace

from ._csv import MAX_FPS, parse_csv, valid_fps
from ._decode import decode_text
from ._json import parse_json, parse_seconds
from ._model import (
    MAX_SECONDS,
    Cue,
    TranscriptFormatError,
    brief,
    clock,
    is_blank,
    text_problem,
)
from ._subtitles import parse_subtitles

__all__ = [
    "FORMATS",
    "MAX_FPS",
    "MAX_SECONDS",
    "MIN_DURATION",
    "Cue",
    "TranscriptFormatError",
    "brief",
    "decode_text",
    "format_for",
    "is_blank",
    "normalize",
    "parse",
    "parse_seconds",
    "text_problem",
    "valid_fps",
]

# File extension -> format name.
FORMATS: dict[str, str] = {".csv": "csv", ".json": "json", ".srt": "srt", ".vtt": "vtt"}

# Shortest cue window that trimming may leave; shorter ones are merged into the next.
MIN_DURATION = 0.2


def format_for(filename: str) -> str:
    """The format of a file by its extension (any case): ``"srt"``, ``"vtt"``, ``"csv"``
    or ``"json"``. Anything else is a TranscriptFormatError listing the supported ones."""
    dot = filename.rfind(".")
    slash = max(filename.rfind("/"), filename.rfind("\\"))
    suffix = filename[dot:].lower() if dot > slash + 1 else ""
    if suffix not in FORMATS:
        raise TranscriptFormatError(
            f"unsupported transcript format {brief(suffix) if suffix else '(no extension)'}; "
            f"supported: {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


def parse(data: bytes, *, format: str, csv_fps: float | None = None) -> list[Cue]:
    """The cues of a file's bytes in ``format``, in file order, not yet normalized.

    ``csv_fps`` is the frame rate of ``h:mm:ss:frame`` times in CSV (else inferred);
    other formats ignore it.
    """
    if format not in FORMATS.values():
        raise TranscriptFormatError(
            f"unknown format {brief(format)}; supported: {', '.join(sorted(FORMATS.values()))}"
        )
    text = decode_text(data)
    if format == "srt":
        return parse_subtitles(text, vtt=False)
    if format == "vtt":
        return parse_subtitles(text, vtt=True)
    if format == "csv":
        return parse_csv(text, csv_fps=csv_fps)
    return parse_json(text)


def _where(cue: Cue) -> str:
    # JSON cues have no line; their start time is the next best handle.
    return f"line {cue.line}" if cue.line else f"the cue at {clock(cue.start)}"


def normalize(cues: list[Cue]) -> tuple[list[Cue], list[str]]:
    """Cues fit for the API, and human-readable notes of what was changed (module doc)."""
    if not cues:
        raise TranscriptFormatError("no cues found")
    for cue in cues:
        if cue.end <= cue.start:
            raise TranscriptFormatError(
                f"the cue ends ({clock(cue.end)}) at or before it starts ({clock(cue.start)})",
                line=cue.line or None,
            )
    notes: list[str] = []
    kept: list[Cue] = []
    for cue in cues:
        text = cue.text.strip()
        if is_blank(text):
            notes.append(f"{_where(cue)}: dropped a cue with no text")
            continue
        problem = text_problem(text)
        if problem is not None:
            where = "" if cue.line else f"{_where(cue)}: "
            raise TranscriptFormatError(f"{where}the text {problem}", line=cue.line or None)
        kept.append(replace(cue, text=text) if text != cue.text else cue)
    if not kept:
        raise TranscriptFormatError("no cues found (every cue is empty)")
    ordered = sorted(kept, key=lambda c: c.start)
    if ordered != kept:
        notes.append("cues were not in time order; sorted them by start time")

    result: list[Cue] = [ordered[0]]
    for cue in ordered[1:]:
        previous = result[-1]
        if cue.start >= previous.end:
            result.append(cue)
        elif cue.start - previous.start >= MIN_DURATION:
            result[-1] = replace(previous, end=cue.start)
            result.append(cue)
            notes.append(
                f"{_where(previous)}: trimmed end from {clock(previous.end)} to "
                f"{clock(cue.start)} to avoid overlapping {_where(cue)}"
            )
        else:
            result[-1] = replace(
                previous,
                end=max(previous.end, cue.end),
                text=f"{previous.text} {cue.text}",
                speaker=previous.speaker or cue.speaker,
            )
            notes.append(
                f"{_where(previous)}: merged with {_where(cue)} into one cue "
                f"{clock(previous.start)}-{clock(max(previous.end, cue.end))}: they overlap "
                f"and trimming would leave less than {MIN_DURATION:g} s"
            )
    return result, notes
