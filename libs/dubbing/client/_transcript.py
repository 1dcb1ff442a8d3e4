"""Reading transcripts from files into ``dubbing.v1.Transcript``.

Formats are chosen by file extension from :data:`_LOADERS`; each loader turns the
file's text into a list of :class:`_RawSegment` and the common code validates and
converts them. JSON is the only format today; SRT, VTT and CSV plug in as further
entries (``".srt": _parse_srt``...) without touching the rest.

JSON accepts either ``{"segments": [...]}`` or a bare list of segments; each segment
is ``{"start": ..., "end": ..., "text": "...", "speaker": "A"}`` (``speaker``
optional) with times in seconds (a number) or as ``"hh:mm:ss.mmm"`` /
``"mm:ss.mmm"`` strings (a ``,`` before the milliseconds, as SRT writes it, works too).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dubbing.jobstate import duration
from dubbing.v1 import dubbing_pb2 as pb


class TranscriptError(ValueError):
    """A transcript file cannot be read; the message names the file and the segment index."""


@dataclass(frozen=True, slots=True)
class _RawSegment:
    """One segment as found in a file, before validation. ``where`` locates it for errors."""

    where: str
    start: object
    end: object
    text: object
    speaker: object = ""


_Parser = Callable[[str], list[_RawSegment]]

_TIME = re.compile(r"^(?:(?:(?P<h>\d+):)?(?P<m>\d{1,2}):)?(?P<s>\d{1,2}(?:[.,]\d+)?)$")


def parse_time(value: object, *, what: str = "time") -> float:
    """Seconds from a number of seconds or an ``[[hh:]mm:]ss[.mmm]`` string.

    Raises ValueError (with ``what`` in the message) for anything else, for negative or
    non-finite numbers, and for minutes or seconds of 60 or more in a clock string.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be seconds (a number) or 'hh:mm:ss.mmm', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        match = _TIME.match(text)
        if match is None:
            raise ValueError(f"{what} must be seconds or 'hh:mm:ss.mmm', got {value!r}")
        hours = int(match["h"] or 0)
        minutes = int(match["m"] or 0)
        secs = float(match["s"].replace(",", "."))
        if match["m"] is not None and (minutes >= 60 or secs >= 60):
            raise ValueError(f"{what} {value!r} has minutes or seconds of 60 or more")
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {value!r}")
    return seconds


def _parse_json(text: str) -> list[_RawSegment]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptError(f"not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        if "segments" not in data:
            raise TranscriptError('expected an object with a "segments" list, or a list')
        items = data["segments"]
        prefix = "segments"
    else:
        items = data
        prefix = ""
    if not isinstance(items, list):
        raise TranscriptError(
            f'"segments" must be a list, got {type(items).__name__}'
            if prefix
            else f'expected an object with a "segments" list, or a list, got {type(items).__name__}'
        )
    raw: list[_RawSegment] = []
    for index, item in enumerate(items):
        where = f"segment {index}"
        if not isinstance(item, dict):
            raise TranscriptError(f"{where}: must be an object, got {type(item).__name__}")
        missing = [key for key in ("start", "end", "text") if key not in item]
        if missing:
            raise TranscriptError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        raw.append(
            _RawSegment(
                where=where,
                start=item["start"],
                end=item["end"],
                text=item["text"],
                speaker=item.get("speaker", ""),
            )
        )
    return raw


# Extension (lowercase, with the dot) -> parser of the file's text.
_LOADERS: dict[str, _Parser] = {
    ".json": _parse_json,
}


def _segment(raw: _RawSegment) -> pb.Segment:
    try:
        start = parse_time(raw.start, what="'start'")
        end = parse_time(raw.end, what="'end'")
    except ValueError as exc:
        raise TranscriptError(f"{raw.where}: {exc}") from None
    if end <= start:
        raise TranscriptError(f"{raw.where}: 'end' ({end:g} s) must be after 'start' ({start:g} s)")
    if not isinstance(raw.text, str):
        raise TranscriptError(f"{raw.where}: 'text' must be a string, got {raw.text!r}")
    if not raw.text.strip():
        raise TranscriptError(f"{raw.where}: 'text' is empty")
    speaker = raw.speaker if raw.speaker is not None else ""
    if isinstance(speaker, int) and not isinstance(speaker, bool):
        speaker = str(speaker)
    if not isinstance(speaker, str):
        raise TranscriptError(f"{raw.where}: 'speaker' must be a string, got {raw.speaker!r}")
    return pb.Segment(
        start=duration(start), end=duration(end), text=raw.text.strip(), speaker=speaker
    )


def transcript_from_segments(raw: list[_RawSegment]) -> pb.Transcript:
    if not raw:
        raise TranscriptError("the transcript has no segments")
    return pb.Transcript(segments=[_segment(r) for r in raw])


def parse_transcript(text: str, *, suffix: str = ".json") -> pb.Transcript:
    """A transcript from the text of a file of type ``suffix`` (``".json"``...)."""
    key = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
    parser = _LOADERS.get(key)
    if parser is None:
        raise TranscriptError(
            f"unsupported transcript format {suffix!r}; supported: {', '.join(sorted(_LOADERS))}"
        )
    return transcript_from_segments(parser(text))


def load_transcript(path: str | os.PathLike[str]) -> pb.Transcript:
    """Read a transcript file; the format follows the extension (today: ``.json``).

    Raises :class:`TranscriptError` (a ValueError) naming the file and, for a malformed
    entry, the segment index (``segment 2: 'end' (1 s) must be after 'start' (2.5 s)``).
    Only the shape of each segment is checked here; ordering and overlaps are the
    service's to judge.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _LOADERS:
        raise TranscriptError(
            f"{p}: unsupported transcript format {suffix or '(no extension)'!r}; "
            f"supported: {', '.join(sorted(_LOADERS))}"
        )
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TranscriptError(f"{p}: cannot read: {exc}") from exc
    try:
        return parse_transcript(text, suffix=suffix)
    except TranscriptError as exc:
        raise TranscriptError(f"{p}: {exc}") from None
