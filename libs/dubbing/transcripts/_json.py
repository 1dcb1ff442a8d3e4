"""JSON segments (``{"segments": [...]}`` or a bare list) to cues.

The same shape the client's JSON loader reads: ``start``/``end`` in seconds or as
``[[h:]mm:]ss[.mmm]`` strings, ``text``, optional ``speaker``. JSON parsers do not report
the line of a value, so cues carry ``line=0`` and errors name the segment index.

JSON can say more than the other formats: nesting as deep as it likes, numbers of any
size, and ``\\ud800``-style escapes of lone surrogates, which are not characters. All of
these are errors here (too deep, a time out of range, not a character), never crashes.
"""

from __future__ import annotations

import json
import re

from ._model import Cue, TranscriptFormatError, brief, checked_seconds

# Hours have at most five digits (see _model.MAX_HOURS).
_CLOCK = re.compile(r"^(?:(?:(\d{1,5}):)?(\d{1,2}):)?(\d{1,2}(?:[.,]\d+)?)$")


def parse_seconds(value: object, *, what: str = "time") -> float:
    """Seconds from a number of seconds or an ``[[hh:]mm:]ss[.mmm]`` string (``,`` works
    before the milliseconds too). Raises TranscriptFormatError (a ValueError) naming
    `what` for anything else, negative, non-finite or too large values (100,000 hours or
    more), and clock parts of 60+."""
    where = what
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TranscriptFormatError(
            f"{where} must be seconds or 'hh:mm:ss.mmm', got {brief(value)}"
        )
    if isinstance(value, str):
        match = _CLOCK.match(value.strip())
        if match is None:
            raise TranscriptFormatError(
                f"{where} must be seconds or 'hh:mm:ss.mmm', got {brief(value)}"
            )
        hours, minutes, secs = match.groups()
        if minutes is not None and (int(minutes) >= 60 or float(secs.replace(",", ".")) >= 60):
            raise TranscriptFormatError(
                f"{where} {brief(value)} has minutes or seconds of 60 or more"
            )
        value = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs.replace(",", "."))
    return checked_seconds(value, where)


def _load(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptFormatError(f"not valid JSON: {exc.msg}", line=exc.lineno) from None
    except RecursionError:
        raise TranscriptFormatError("not valid JSON here: it is nested too deeply") from None
    except ValueError:  # an integer beyond Python's limit on digits (4,300)
        raise TranscriptFormatError("not valid JSON here: a number has too many digits") from None


def _characters(value: str, what: str) -> str:
    """`value` if it is only characters: a lone surrogate escape (``"\\ud800"``) is not one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise TranscriptFormatError(
            f"{what} holds \\u{code:04x}, a lone surrogate, which is not a character"
        ) from None
    return value


def parse_json(text: str) -> list[Cue]:
    data = _load(text)
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
            raise TranscriptFormatError(f"{where}: 'text' must be a string, got {brief(text)}")
        if isinstance(speaker, int) and not isinstance(speaker, bool) and speaker.bit_length() < 64:
            speaker = str(speaker)  # a speaker numbered 1, 2...
        if not isinstance(speaker, str):
            raise TranscriptFormatError(
                f"{where}: 'speaker' must be a string, got {brief(speaker)}"
            )
        cues.append(
            Cue(
                start=parse_seconds(item["start"], what=f"{where}: 'start'"),
                end=parse_seconds(item["end"], what=f"{where}: 'end'"),
                text=" ".join(_characters(text, f"{where}: 'text'").split()),
                speaker=_characters(speaker, f"{where}: 'speaker'"),
            )
        )
    return cues
