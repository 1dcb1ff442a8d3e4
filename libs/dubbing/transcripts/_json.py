"""JSON segments (``{"segments": [...]}`` or a bare list) to cues.

The same shape the client's JSON loader reads: ``start``/``end`` in seconds or as
``[[h:]mm:]ss[.mmm]`` strings, ``text``, optional ``speaker``. JSON parsers do not report
the line of a value, so cues carry ``line=0`` and errors name the segment index.
"""

from __future__ import annotations

import json
import math
import re

from ._model import Cue, TranscriptFormatError

_CLOCK = re.compile(r"^(?:(?:(\d+):)?(\d{1,2}):)?(\d{1,2}(?:[.,]\d+)?)$")


def parse_seconds(value: object, *, what: str = "time") -> float:
    """Seconds from a number of seconds or an ``[[hh:]mm:]ss[.mmm]`` string (``,`` works
    before the milliseconds too). Raises TranscriptFormatError (a ValueError) naming
    `what` for anything else, negative or non-finite values, and clock parts of 60+."""
    where = what
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TranscriptFormatError(f"{where} must be seconds or 'hh:mm:ss.mmm', got {value!r}")
    if isinstance(value, str):
        match = _CLOCK.match(value.strip())
        if match is None:
            raise TranscriptFormatError(f"{where} must be seconds or 'hh:mm:ss.mmm', got {value!r}")
        hours, minutes, secs = match.groups()
        if minutes is not None and (int(minutes) >= 60 or float(secs.replace(",", ".")) >= 60):
            raise TranscriptFormatError(f"{where} {value!r} has minutes or seconds of 60 or more")
        value = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs.replace(",", "."))
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise TranscriptFormatError(f"{where} must be a finite, non-negative number, got {value!r}")
    return seconds


def parse_json(text: str) -> list[Cue]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptFormatError(f"not valid JSON: {exc.msg}", line=exc.lineno) from None
    items = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise TranscriptFormatError('expected an object with a "segments" list, or a list')
    cues: list[Cue] = []
    for index, item in enumerate(items):
        where = f"segment {index}"
        if not isinstance(item, dict):
            raise TranscriptFormatError(f"{where}: must be an object, got {type(item).__name__}")
        missing = [key for key in ("start", "end", "text") if key not in item]
        if missing:
            raise TranscriptFormatError(f"{where}: missing {', '.join(map(repr, missing))}")
        text, speaker = item["text"], item.get("speaker") or ""
        if not isinstance(text, str):
            raise TranscriptFormatError(f"{where}: 'text' must be a string, got {text!r}")
        if isinstance(speaker, int) and not isinstance(speaker, bool):
            speaker = str(speaker)
        if not isinstance(speaker, str):
            raise TranscriptFormatError(f"{where}: 'speaker' must be a string, got {speaker!r}")
        cues.append(
            Cue(
                start=parse_seconds(item["start"], what=f"{where}: 'start'"),
                end=parse_seconds(item["end"], what=f"{where}: 'end'"),
                text=" ".join(text.split()),
                speaker=speaker,
            )
        )
    return cues
