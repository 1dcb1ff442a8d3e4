"""Properties of the transcript readers on any input: a result or a short format error.

Whatever bytes a TranscriptFile holds, reading it either gives cues that the gateway can
turn into segments and validate, or raises TranscriptFormatError (UnreadableFile in the
gateway) with a short message: never another exception. Inputs are drawn both as raw
bytes and from each format's shape, with hostile parts mixed in: numbers of any size,
clock times with long digit runs, lone surrogate escapes, control and invisible
characters, nesting.
"""

from __future__ import annotations

import json
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dubbing import transcripts
from dubbing.v1 import dubbing_pb2 as pb
from gateway import transcript_files
from gateway.validation import Limits, validate_dub_request

# Deterministic (the same examples every run), no example database left behind.
PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_MESSAGE = 600  # characters: a message names a line or segment and quotes a few dozen

# Any code point, lone surrogates included, weighted towards the awkward ones.
AWKWARD = st.sampled_from(
    ["\x00", "\x07", "\x1b", "\x9f", "\u200b", "\u2060", "\ufeff", "\u3000", "\ud800", "\udfff"]
)
CHARACTERS = st.one_of(st.characters(exclude_categories=()), AWKWARD)
TEXT = st.text(CHARACTERS, max_size=40)
DIGITS = st.from_regex(r"[0-9]{1,400}", fullmatch=True)
CLOCK = st.builds(
    lambda h, m, s, f, sep: f"{h}:{m}:{s}{sep}{f}",
    DIGITS,
    st.from_regex(r"[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"[0-9]{0,5}", fullmatch=True),
    st.sampled_from([",", ".", ":"]),
)
TIME_TEXT = st.one_of(DIGITS, CLOCK, st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,500})?", fullmatch=True))
NUMBER = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBER, TEXT, TIME_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
JSON_SEGMENT = st.fixed_dictionaries(
    {},
    optional={
        "start": st.one_of(NUMBER, TIME_TEXT, JSON_VALUE),
        "end": st.one_of(NUMBER, TIME_TEXT, JSON_VALUE),
        "text": st.one_of(TEXT, JSON_VALUE),
        "speaker": st.one_of(TEXT, NUMBER, JSON_VALUE),
    },
)

# Segments that mostly read, so that what reaches a cue's text is exercised too.
PLAUSIBLE_SEGMENT = st.builds(
    lambda start, length, text, speaker: {
        "start": start,
        "end": start + length,
        "text": text,
        "speaker": speaker,
    },
    st.floats(min_value=0, max_value=1e4),
    st.floats(min_value=0.01, max_value=60),
    TEXT,
    TEXT,
)


def _dumps(value: object) -> bytes:
    # ensure_ascii writes lone surrogates as \ud800 escapes, as a hostile file would.
    return json.dumps(value, ensure_ascii=True).encode()


JSON_FILE = st.one_of(
    st.lists(PLAUSIBLE_SEGMENT, min_size=1, max_size=5).map(_dumps),
    st.lists(JSON_SEGMENT, max_size=5).map(lambda s: _dumps({"segments": s})),
    st.lists(JSON_SEGMENT, max_size=5).map(_dumps),
    JSON_VALUE.map(_dumps),
)
SHORT_CLOCK = st.builds(
    lambda m, s, ms: f"00:{m:02d}:{s:02d},{ms:03d}",
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
SUBTITLE_LINE = st.one_of(
    st.builds(lambda a, b: f"{a} --> {b}", SHORT_CLOCK, SHORT_CLOCK),
    st.builds(lambda a, b, rest: f"{a} --> {b}{rest}", TIME_TEXT, TIME_TEXT, TEXT),
    st.builds(lambda a, b: f"{a} --> {b}", CLOCK, CLOCK),
    TEXT,
    st.just(""),
    st.just("WEBVTT"),
    st.just("NOTE x"),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
)
SUBTITLE_FILE = st.lists(SUBTITLE_LINE, max_size=12).map(
    lambda lines: "\n".join(lines).encode("utf-8", errors="surrogatepass")
)
CSV_FIELD = st.one_of(TIME_TEXT, TEXT, st.just(""))
CSV_FILE = st.builds(
    lambda header, rows: "\n".join([header] + [",".join(row) for row in rows]).encode(
        "utf-8", errors="surrogatepass"
    ),
    st.sampled_from(
        [
            "speaker,start_time,end_time,transcription,translation",
            "start_time,end_time,transcription",
            "start_time,start_time,transcription",
            "a,b",
        ]
    ),
    st.lists(st.lists(CSV_FIELD, min_size=3, max_size=5), max_size=6),
)
FILES = st.one_of(
    st.tuples(st.just("json"), st.one_of(JSON_FILE, st.binary(max_size=300))),
    st.tuples(st.sampled_from(["srt", "vtt"]), st.one_of(SUBTITLE_FILE, st.binary(max_size=300))),
    st.tuples(st.just("csv"), st.one_of(CSV_FILE, st.binary(max_size=300))),
)
FPS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@PROPERTIES
@given(FILES, FPS)
@example(("json", b'{"segments": ' + b"[" * 5000 + b"]" * 5000 + b"}"), None)
@example(("json", b'[{"start": 0, "end": 1' + b"0" * 400 + b', "text": "a"}]'), None)
@example(("json", b'[{"start": 0, "end": 1, "text": "Bonjour \\ud800"}]'), None)
@example(("csv", b"start_time,end_time,transcription\n0:00:00:00,0:00:01:00,a\n"), 1e9)
def test_reading_any_file_gives_cues_or_a_short_format_error(
    file: tuple[str, bytes], csv_fps: float | None
) -> None:
    fmt, data = file
    try:
        cues, notes = transcripts.normalize(transcripts.parse(data, format=fmt, csv_fps=csv_fps))
    except transcripts.TranscriptFormatError as exc:
        assert len(str(exc)) < MAX_MESSAGE
        return
    for cue in cues:
        assert 0 <= cue.start < cue.end < transcripts.MAX_SECONDS
        # Said again here without text_problem: something visible, no control characters.
        assert any(unicodedata.category(c)[0] in "LNPS" for c in cue.text)
        assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in cue.text)
        cue.text.encode()  # only characters: a protobuf string field takes it
        cue.speaker.encode()
    assert all(len(note) < MAX_MESSAGE for note in notes)


@PROPERTIES
@given(FILES, st.floats(allow_nan=True, allow_infinity=True), TEXT)
def test_the_gateway_reads_any_file_into_segments_or_an_unreadable_file(
    file: tuple[str, bytes], csv_fps: float, filename: str
) -> None:
    fmt, data = file
    request = pb.DubRequest(
        target_language="fr",
        transcript=pb.TranscriptDubbing(
            file=pb.TranscriptFile(
                content=data,
                format=fmt,
                filename=filename.encode(errors="replace").decode(),
                csv_fps=csv_fps,
            )
        ),
    )
    try:
        expanded, warnings = transcript_files.expand(request)
    except transcript_files.UnreadableFile as exc:
        assert exc.field.startswith(transcript_files.FILE_FIELD)
        assert len(exc.description) < MAX_MESSAGE
        return
    assert len(warnings) <= transcript_files.MAX_WARNINGS
    violations = validate_dub_request(expanded, Limits())
    assert all(field.startswith("request") for field, _ in violations)
    expanded.SerializeToString()
