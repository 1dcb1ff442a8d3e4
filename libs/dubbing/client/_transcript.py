"""Reading transcripts from files into ``dubbing.v1.Transcript``.

Formats are chosen by file extension from :data:`_LOADERS`; each loader turns the
file's bytes into a list of :class:`_RawSegment` (and notes of what it changed), and
the common code validates and converts them. SubRip (``.srt``), WebVTT (``.vtt``) and
the manual-dubbing CSV (``.csv``) are read by :mod:`dubbing.transcripts`, which decodes
legacy encodings, names the offending line in errors, and normalizes the cues (sorted,
overlaps trimmed or merged, empty cues dropped), reporting each change as a note.

JSON accepts either ``{"segments": [...]}`` or a bare list of segments; each segment
is ``{"start": ..., "end": ..., "text": "...", "speaker": "A"}`` (``speaker``
optional) with times in seconds (a number) or as ``"hh:mm:ss.mmm"`` /
``"mm:ss.mmm"`` strings (a ``,`` before the milliseconds, as SRT writes it, works too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dubbing import transcripts
from dubbing.jobstate import duration
from dubbing.v1 import dubbing_pb2 as pb

_log = logging.getLogger(__name__)


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


# A loader: (file bytes, csv_fps) -> (segments, notes of what was changed on reading).
_Loader = Callable[[bytes, float | None], tuple[list[_RawSegment], list[str]]]

# One time parser for every reader (see dubbing.transcripts).
parse_time = transcripts.parse_seconds


def _load_json(data: bytes, csv_fps: float | None) -> tuple[list[_RawSegment], list[str]]:
    # JSON is read by dubbing.transcripts but, unlike the subtitle formats, not
    # normalized: ordering and overlaps in JSON are the caller's to get right, and
    # the service reports them per segment.
    try:
        cues = transcripts.parse(data, format="json")
    except transcripts.TranscriptFormatError as exc:
        raise TranscriptError(str(exc)) from None
    raw = [
        _RawSegment(where=f"segment {i}", start=c.start, end=c.end, text=c.text, speaker=c.speaker)
        for i, c in enumerate(cues)
    ]
    return raw, []


def _cue_loader(format: str) -> _Loader:
    """A loader for a :mod:`dubbing.transcripts` format: parse, normalize, convert."""

    def load(data: bytes, csv_fps: float | None) -> tuple[list[_RawSegment], list[str]]:
        try:
            cues, notes = transcripts.normalize(
                transcripts.parse(data, format=format, csv_fps=csv_fps)
            )
        except transcripts.TranscriptFormatError as exc:
            raise TranscriptError(str(exc)) from None
        raw = [
            _RawSegment(
                where=f"line {c.line}", start=c.start, end=c.end, text=c.text, speaker=c.speaker
            )
            for c in cues
        ]
        return raw, notes

    return load


# Extension (lowercase, with the dot) -> loader of the file's bytes.
_LOADERS: dict[str, _Loader] = {
    ".json": _load_json,
    ".srt": _cue_loader("srt"),
    ".vtt": _cue_loader("vtt"),
    ".csv": _cue_loader("csv"),
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
        raise TranscriptError(
            f"{raw.where}: 'text' must be a string, got {transcripts.brief(raw.text)}"
        )
    if (problem := transcripts.text_problem(raw.text)) is not None:
        raise TranscriptError(f"{raw.where}: 'text' {problem}")
    speaker = raw.speaker if raw.speaker is not None else ""
    if isinstance(speaker, int) and not isinstance(speaker, bool):
        speaker = str(speaker)
    if not isinstance(speaker, str):
        raise TranscriptError(
            f"{raw.where}: 'speaker' must be a string, got {transcripts.brief(raw.speaker)}"
        )
    return pb.Segment(
        start=duration(start), end=duration(end), text=raw.text.strip(), speaker=speaker
    )


def transcript_from_segments(raw: list[_RawSegment]) -> pb.Transcript:
    if not raw:
        raise TranscriptError("the transcript has no segments")
    return pb.Transcript(segments=[_segment(r) for r in raw])


def _report(notes: list[str], on_note: Callable[[str], None] | None, name: str) -> None:
    for note in notes:
        if on_note is not None:
            on_note(note)
        else:
            _log.warning("%s: %s", name, note)


def parse_transcript(
    text: str,
    *,
    suffix: str = ".json",
    csv_fps: float | None = None,
    on_note: Callable[[str], None] | None = None,
) -> pb.Transcript:
    """A transcript from the text of a file of type ``suffix`` (``".json"``, ``".srt"``...).

    ``csv_fps`` and ``on_note`` are as for :func:`load_transcript`.
    """
    key = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
    loader = _LOADERS.get(key)
    if loader is None:
        raise TranscriptError(
            f"unsupported transcript format {suffix!r}; supported: {', '.join(sorted(_LOADERS))}"
        )
    raw, notes = loader(text.encode("utf-8"), csv_fps)
    transcript = transcript_from_segments(raw)
    _report(notes, on_note, "transcript")
    return transcript


def load_transcript(
    path: str | os.PathLike[str],
    *,
    csv_fps: float | None = None,
    on_note: Callable[[str], None] | None = None,
) -> pb.Transcript:
    """Read a transcript file; the format follows the extension: ``.json``, ``.srt``,
    ``.vtt`` or ``.csv``.

    Raises :class:`TranscriptError` (a ValueError) naming the file and, for a malformed
    entry, the segment index for JSON (``segment 2: 'end' (1 s) must be after 'start'
    (2.5 s)``) or the line for the other formats (``line 12: bad timing line ...``).
    JSON segments are only checked for shape (ordering and overlaps are the service's
    to judge); SRT, VTT and CSV cues are normalized (see :mod:`dubbing.transcripts`)
    and each change is passed to ``on_note`` as a sentence, or logged as a warning when
    ``on_note`` is None. ``csv_fps`` is the frame rate of ``h:mm:ss:frame`` times in a
    CSV; by default it is inferred when unambiguous.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise TranscriptError(
            f"{p}: unsupported transcript format {suffix or '(no extension)'!r}; "
            f"supported: {', '.join(sorted(_LOADERS))}"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TranscriptError(f"{p}: cannot read: {exc}") from exc
    try:
        raw, notes = loader(data, csv_fps)
        transcript = transcript_from_segments(raw)
    except TranscriptError as exc:
        raise TranscriptError(f"{p}: {exc}") from None
    _report(notes, on_note, str(p))
    return transcript
