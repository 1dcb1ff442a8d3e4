"""SubRip (.srt) and WebVTT (.vtt) text to cues, with the source line of every cue.

Why not pysubs2 (or webvtt-py): neither reports where in the file a problem is, and
pysubs2 1.8.1 (the newest release for Python 3.11) reads messy files wrongly rather than
failing: a malformed timing line such as ``00:00:xx,000 --> 00:00:03,000`` silently
becomes text of the previous cue, a WebVTT ``NOTE`` block or cue identifier after a cue
is glued into that cue's text, ``<v Roger>`` is dropped with its speaker, and a last
text line made of digits ("1984") is taken for the next cue's number and deleted.
webvtt-py needs a numeric index on every SRT cue. Both formats are line-based blocks
with one timing line per cue, so one small reader here does both and keeps line numbers.

The reading rules, shared by both formats:

- Lines end at CRLF, CR or LF; a blank line (only whitespace) ends a block.
- A line containing ``-->`` is a timing line and starts a cue; it must read
  ``START --> END`` with ``[h:]mm:ss[.,]mmm`` times (``,`` or ``.`` in either format);
  anything after END (WebVTT cue settings such as ``align:start position:10%``) is
  ignored. A malformed one is an error naming its line, and so is a line that starts
  with a timestamp but has no ``-->``.
- The line just before a timing line is the cue's identifier when it is in the same
  block and (SRT) made of digits or (WebVTT) the first line of the block. Cue numbers
  may be missing.
- Other lines are the text of the current cue, joined with single spaces; a block of
  text after a blank line continues the cue before it (messy SRTs have blank lines
  inside cues). Text before the first cue is an error naming its line.
- WebVTT: the file must start with ``WEBVTT``; the header block, ``NOTE``, ``STYLE``
  and ``REGION`` blocks are skipped; character references (``&amp;``) are decoded.
- Markup is removed: HTML-like tags (``<i>``, ``<b>``, ``<font color=...>``,
  ``<c.class>``, ``<00:00:01.000>`` ...) and ASS override blocks (``{\\an8}``). The first
  ``<v Speaker>`` voice tag of a cue gives its speaker.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from ._model import Cue, TranscriptFormatError, brief, checked_seconds

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TIMESTAMP = r"(?:\d{1,5}:)?\d{1,2}:\d{1,2}[.,]\d{1,3}"
_TIMING = re.compile(rf"^\s*(?P<start>{_TIMESTAMP})\s*-->\s*(?P<end>{_TIMESTAMP})(?:\s.*)?$")
_TIME_PARTS = re.compile(r"^(?:(\d{1,5}):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})$")
# A line that begins like a timestamp: a timing line whose arrow is missing or mangled.
_LOOKS_LIKE_TIMING = re.compile(r"^\s*\d+:\d{1,2}(?::\d{1,2})?[.,]\d")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?[ \t]+([^>]+)>")
# Tags start with a letter, '/', or a digit (WebVTT inline timestamps), so "I <3 you"
# and "a < b" survive.
_TAG = re.compile(r"</?[A-Za-z0-9][^<>]*>")
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
_SPACES = re.compile(r"\s+")
_VTT_HEADER = re.compile(r"^WEBVTT(?:[ \t].*)?$")
_VTT_SKIPPED_BLOCK = re.compile(r"^(?:NOTE(?:[ \t].*)?|STYLE[ \t]*|REGION[ \t]*)$")


@dataclass
class _Open:
    """A cue being read: its timing, source line and raw text lines."""

    start: float
    end: float
    line: int
    text: list[str] = field(default_factory=list)


def _seconds(stamp: str, line: int) -> float:
    match = _TIME_PARTS.match(stamp)
    if match is None:  # pragma: no cover - _TIMING only matches valid shapes
        raise TranscriptFormatError(f"bad timestamp {stamp!r}", line=line)
    hours, minutes, secs, frac = match.groups()
    if int(minutes) >= 60 or int(secs) >= 60:
        raise TranscriptFormatError(
            f"bad timestamp {stamp!r}: minutes and seconds must be below 60", line=line
        )
    whole = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs)
    return checked_seconds(whole + int(frac) / 10.0 ** len(frac), "the time", line=line)


def _timing(text: str, line: int, example: str) -> tuple[float, float]:
    match = _TIMING.match(text)
    if match is None:
        raise TranscriptFormatError(
            f"bad timing line {brief(text.strip())}, expected '{example}'", line=line
        )
    return _seconds(match["start"], line), _seconds(match["end"], line)


def clean_text(lines: list[str], *, vtt: bool) -> tuple[str, str]:
    """(text, speaker) of a cue: markup removed, lines joined with single spaces."""
    raw = " ".join(lines)
    voice = _VOICE.search(raw)
    speaker = _SPACES.sub(" ", voice[1]).strip() if voice else ""
    text = _ASS_OVERRIDE.sub("", _TAG.sub("", raw))
    if vtt:
        # Unescape after removing tags, so an escaped "&lt;i&gt;" stays visible text.
        text = html.unescape(text)
    return _SPACES.sub(" ", text).strip(), speaker


def _blocks(text: str) -> list[list[tuple[int, str]]]:
    """Runs of non-blank lines, each line with its 1-based number."""
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        if line.strip():
            current.append((number, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def parse_subtitles(text: str, *, vtt: bool) -> list[Cue]:
    """Cues of an SRT (``vtt=False``) or WebVTT text, in file order, untouched otherwise."""
    example = "00:00:01.000 --> 00:00:02.500" if vtt else "00:00:01,000 --> 00:00:02,500"
    blocks = _blocks(text)
    if vtt:
        if not blocks or blocks[0][0][0] != 1 or not _VTT_HEADER.match(blocks[0][0][1]):
            raise TranscriptFormatError("a WebVTT file must start with 'WEBVTT'", line=1)
        header = blocks.pop(0)
        for number, line in header:
            if "-->" in line:
                raise TranscriptFormatError(
                    "a blank line must separate the WEBVTT header from the first cue",
                    line=number,
                )
    cues: list[_Open] = []
    for block in blocks:
        if vtt and _VTT_SKIPPED_BLOCK.match(block[0][1].rstrip()):
            continue
        for index, (number, line) in enumerate(block):
            if "-->" in line:
                start, end = _timing(line, number, example)
                if index > 0:
                    previous = block[index - 1][1].strip()
                    is_identifier = "-->" not in previous and (
                        index == 1 if vtt else previous.isdigit()
                    )
                    if is_identifier and cues and cues[-1].text:
                        # It was read as text of the cue before; it is this cue's name.
                        cues[-1].text.pop()
                cues.append(_Open(start, end, number))
                continue
            if _LOOKS_LIKE_TIMING.match(line):
                raise TranscriptFormatError(
                    f"bad timing line {brief(line.strip())}, expected '{example}'", line=number
                )
            if cues:
                cues[-1].text.append(line)
                continue
            # Text before the first cue: fine only as the first cue's identifier.
            following = block[index + 1][1] if index + 1 < len(block) else ""
            if "-->" in following and (index == 0 if vtt else line.strip().isdigit()):
                continue
            raise TranscriptFormatError(
                f"expected a cue timing line like '{example}', got {brief(line.strip())}",
                line=number,
            )
    result: list[Cue] = []
    for cue in cues:
        body, speaker = clean_text(cue.text, vtt=vtt)
        result.append(Cue(start=cue.start, end=cue.end, text=body, speaker=speaker, line=cue.line))
    return result
