# Non-Latin and typographic characters are the point of the decoding fixtures.
# ruff: noqa: RUF001
"""Reading SRT, WebVTT, manual-dubbing CSV and JSON transcripts from messy bytes.

Fixtures are built here as bytes, in the encodings and shapes real files come in.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from dubbing.client import TranscriptError, load_transcript
from dubbing.transcripts import (
    Cue,
    TranscriptFormatError,
    decode_text,
    format_for,
    normalize,
    parse,
)
from dubbing.v1 import dubbing_pb2 as pb

FRENCH = "Ça a déjà été fait, n’est-ce pas ? « Oui »"

SRT = (
    "1\n"
    "00:00:01,000 --> 00:00:02,500\n"
    "{\\an8}<i>Bonjour</i> et\n"
    '<font color="#ff0000">bienvenue</font> <b>à tous</b>\n'
    "\n"
    "00:00:03,000 --> 00:00:04,000\n"  # no index
    "Sans numéro\n"
    "\n"
    "7\n"
    "00:00:04,000 --> 00:00:06,000 X1:100 X2:200\n"
    "Année\n"
    "1984\n"
    "\n"
    "\n"
)


def texts(cues: list[Cue]) -> list[str]:
    return [c.text for c in cues]


# -- decoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-8", b""),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_decode_text_follows_the_bom_or_utf8(encoding: str, bom: bytes) -> None:
    assert decode_text(bom + FRENCH.encode(encoding)) == FRENCH


@pytest.mark.parametrize(
    "text",
    [
        "Ça déjà été",
        "1\r\n00:00:01,000 --> 00:00:02,000\r\nÇa a déjà été fait.\r\n",
        "El niño está aquí, ¿verdad? Sí, señor. “Quotes” — dash…",
    ],
)
def test_decode_text_reads_legacy_western_files_as_windows_1252(text: str) -> None:
    assert decode_text(text.encode("cp1252")) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("1\n00:00:01,000 --> 00:00:02,000\nПривет, как дела? Это уже было сделано.\n", "cp1251"),
        ("1\n00:00:01,000 --> 00:00:02,000\nΓεια σου, τι κάνεις; Αυτό έχει ήδη γίνει.\n", "cp1253"),
        ("1\n00:00:01,000 --> 00:00:02,000\n你好，你怎么样？这已经完成了。\n", "gb18030"),
    ],
)
def test_decode_text_leaves_non_western_legacy_files_to_charset_normalizer(
    text: str, encoding: str
) -> None:
    assert decode_text(text.encode(encoding)) == text


def test_decode_text_names_the_line_of_a_broken_bom_encoded_file() -> None:
    # A lone high surrogate on line 3 of a UTF-16-LE file.
    data = codecs.BOM_UTF16_LE + "a\nb\n".encode("utf-16-le") + b"\x00\xd8" + b"c\x00"
    with pytest.raises(TranscriptFormatError) as caught:
        decode_text(data)
    assert caught.value.line == 3
    assert str(caught.value).startswith("line 3: not valid UTF-16-LE")


def test_decode_text_rejects_bytes_no_encoding_fits() -> None:
    # 0x81 and 0x8d are undefined in Windows-1252, and this is no text at all.
    data = b"1\n" + b"\x00\x81\x8d\x8f\x90\x9d\xff\xfe" * 40
    with pytest.raises(TranscriptFormatError, match=r"^line 2: cannot decode the file"):
        decode_text(data)


# -- SubRip ----------------------------------------------------------------------------


def test_srt_joins_lines_strips_tags_and_tolerates_missing_indexes() -> None:
    cues = parse(SRT.encode("utf-8"), format="srt")
    assert cues == [
        Cue(1.0, 2.5, "Bonjour et bienvenue à tous", line=2),
        Cue(3.0, 4.0, "Sans numéro", line=6),
        # A text line of digits stays text when a blank line follows it.
        Cue(4.0, 6.0, "Année 1984", line=10),
    ]


@pytest.mark.parametrize(
    ("encoding", "bom", "newline"),
    [
        ("utf-8", codecs.BOM_UTF8, "\r\n"),
        ("utf-16-le", codecs.BOM_UTF16_LE, "\r\n"),
        ("utf-16-be", codecs.BOM_UTF16_BE, "\n"),
        ("utf-32-le", codecs.BOM_UTF32_LE, "\r\n"),
        ("cp1252", b"", "\r\n"),
    ],
)
def test_srt_in_every_encoding_and_line_ending(encoding: str, bom: bytes, newline: str) -> None:
    data = bom + SRT.replace("\n", newline).encode(encoding)
    cues = parse(data, format="srt")
    assert texts(cues) == ["Bonjour et bienvenue à tous", "Sans numéro", "Année 1984"]
    assert [c.line for c in cues] == [2, 6, 10]


def test_srt_cue_number_without_a_blank_line_before_it() -> None:
    data = b"1\n00:00:01,000 --> 00:00:02,000\nOne\n2\n00:00:02,000 --> 00:00:03,000\nTwo\n"
    assert texts(parse(data, format="srt")) == ["One", "Two"]


def test_srt_text_after_a_blank_line_inside_a_cue_continues_it() -> None:
    data = (
        b"1\n00:00:01,000 --> 00:00:02,000\nOne\n\nand more\n\n"
        b"2\n00:00:02,000 --> 00:00:03,000\nTwo"
    )
    assert texts(parse(data, format="srt")) == ["One and more", "Two"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\n00:01:xx,000 --> 00:01:02,000\nB\n",
            6,
            "bad timing line '00:01:xx,000 --> 00:01:02,000'",
        ),
        (
            "1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\n00:00:03,000 - 00:00:04,000\nB\n",
            6,
            "bad timing line '00:00:03,000 - 00:00:04,000'",
        ),
        ("1\n00:00:01,000 --> 00:00:75,000\nA\n", 2, "minutes and seconds must be below 60"),
        ("\n\nHello there\n00:00:01,000 --> 00:00:02,000\nA\n", 3, "expected a cue timing"),
        ("not a subtitle file\n", 1, "expected a cue timing line"),
    ],
)
def test_srt_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TranscriptFormatError) as caught:
        parse(text.encode("utf-8"), format="srt")
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"line {line}: ")


@pytest.mark.parametrize("data", [b"", codecs.BOM_UTF8, b"\r\n\r\n  \n", codecs.BOM_UTF16_LE])
def test_an_empty_file_has_no_cues(data: bytes) -> None:
    assert parse(data, format="srt") == []
    with pytest.raises(TranscriptFormatError, match="no cues found"):
        normalize(parse(data, format="srt"))


# -- WebVTT ----------------------------------------------------------------------------

VTT = """WEBVTT - Interview
Kind: captions
Language: fr

STYLE
::cue(.loud) { color: yellow }

NOTE Produced by hand
on two lines

REGION
id:fred width:40%

intro
00:01.000 --> 00:03.500 align:start position:10% line:0
<v.loud Roger Bingham>Bonjour &amp; <c.yellow>bienvenue</c>
<00:00:02.000><i>à tous</i></v>

NOTE between cues

2
00:00:04.000 --> 00:00:05.000
<v Anna>Merci.

00:01:00.000 --> 00:01:02.250
Sans identifiant, sans voix
"""


def test_vtt_skips_header_notes_styles_and_reads_voices_and_short_times() -> None:
    cues = parse(VTT.encode("utf-8"), format="vtt")
    assert cues == [
        Cue(1.0, 3.5, "Bonjour & bienvenue à tous", speaker="Roger Bingham", line=15),
        Cue(4.0, 5.0, "Merci.", speaker="Anna", line=22),
        Cue(60.0, 62.25, "Sans identifiant, sans voix", line=25),
    ]


def test_vtt_with_a_bom_and_crlf() -> None:
    data = codecs.BOM_UTF16_LE + VTT.replace("\n", "\r\n").encode("utf-16-le")
    assert texts(parse(data, format="vtt"))[2] == "Sans identifiant, sans voix"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1\n00:00:01.000 --> 00:00:02.000\nA\n", 1, "must start with 'WEBVTT'"),
        ("WEBVTT\n00:01.000 --> 00:02.000\nA\n", 2, "blank line must separate"),
        ("WEBVTT\n\n00:01.000 --> 00:0x.000\nA\n", 3, "bad timing line"),
        ("WEBVTT\n\nintro\nsecond line\n00:01.000 --> 00:02.000\nA\n", 3, "expected a cue"),
    ],
)
def test_vtt_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TranscriptFormatError) as caught:
        parse(text.encode("utf-8"), format="vtt")
    assert caught.value.line == line
    assert message in caught.value.message


# -- CSV -------------------------------------------------------------------------------

CSV_HEADER = "speaker,start_time,end_time,transcription,translation\r\n"


def test_csv_reads_the_three_time_forms_and_prefers_the_translation() -> None:
    data = (
        CSV_HEADER + "Adam,0.10000,1.5,Hello,Hola\r\n"
        'Adam,"0:00:01,600","0:00:05,000","Hello, again","Hola, otra vez"\r\n'
        "\r\n"  # blank rows are skipped
        'Eve,0:00:05:12,0:00:06:24,"She said ""hi""",\r\n'
    ).encode("utf-8")
    cues = parse(data, format="csv", csv_fps=25)
    assert cues == [
        Cue(0.1, 1.5, "Hola", speaker="Adam", line=2),
        Cue(1.6, 5.0, "Hola, otra vez", speaker="Adam", line=3),
        Cue(5.0 + 12 / 25, 6.0 + 24 / 25, 'She said "hi"', speaker="Eve", line=5),
    ]


@pytest.mark.parametrize(("top", "fps"), [(23, 24), (24, 25), (29, 30), (49, 50), (59, 60)])
def test_csv_infers_a_standard_frame_rate_from_the_last_frame(top: int, fps: int) -> None:
    data = (CSV_HEADER + f"A,0:00:01:00,0:00:01:{top},Hi,\n").encode()
    (cue,) = parse(data, format="csv")
    assert cue.end == pytest.approx(1 + top / fps)


def test_csv_refuses_to_guess_an_ambiguous_frame_rate() -> None:
    data = (CSV_HEADER + "A,0:00:01:00,0:00:01:05,Hi,\nB,0:00:02:12,0:00:03:00,Yo,\n").encode()
    with pytest.raises(TranscriptFormatError) as caught:
        parse(data, format="csv")
    assert caught.value.line == 3
    assert "highest frame is 12" in caught.value.message
    assert "csv_fps" in caught.value.message
    assert parse(data, format="csv", csv_fps=24)[1].start == pytest.approx(2.5)


def test_csv_frames_beyond_the_given_rate_are_an_error() -> None:
    data = (CSV_HEADER + "A,0:00:01:00,0:00:01:10,Hi,\nB,0:00:02:00,0:00:02:26,Yo,\n").encode()
    with pytest.raises(TranscriptFormatError, match=r"^line 3: frame 26 does not exist at 25"):
        parse(data, format="csv", csv_fps=25)


def test_csv_columns_in_any_order_with_multiline_quoted_text_and_cp1252() -> None:
    data = (
        "\r\nStart_Time , end_time,transcription,notes\r\n"
        '0.5,2,"Ça déjà été\r\nfait, oui",ignored\r\n'
        "3,4,Encore,\r\n"
    ).encode("cp1252")
    cues = parse(data, format="csv")
    assert cues == [
        Cue(0.5, 2.0, "Ça déjà été fait, oui", line=3),
        Cue(3.0, 4.0, "Encore", line=5),  # the quoted field spanned lines 3-4
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("\nspeaker,start,end_time,transcription\nA,1,2,x\n", 2, "missing column 'start_time'"),
        ("speaker;start_time;end_time;transcription\n", 1, "missing columns 'start_time'"),
        (CSV_HEADER + "A,1,2,x,y\nB,3,4:00,x,y\n", 3, "bad end_time '4:00'"),
        (CSV_HEADER + "A,1,2,x,y\nB,3,4,x\n", 3, "expected 5 fields"),
        (CSV_HEADER + 'A,1,2,"x,y\n', 2, "not valid CSV"),
        ("start_time,start_time,end_time,transcription\n", 1, "appears twice"),
    ],
)
def test_csv_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TranscriptFormatError) as caught:
        parse(text.encode("utf-8"), format="csv")
    assert caught.value.line == line
    assert message in caught.value.message


def test_csv_with_only_a_header_has_no_cues() -> None:
    assert parse(CSV_HEADER.encode(), format="csv") == []


# -- JSON, formats ---------------------------------------------------------------------


def test_json_cues() -> None:
    data = b'{"segments": [{"start": "00:01.5", "end": 3, "text": " Hi\\n there ", "speaker": 2}]}'
    assert parse(data, format="json") == [Cue(1.5, 3.0, "Hi there", speaker="2")]
    with pytest.raises(TranscriptFormatError, match="segment 0: missing 'end'"):
        parse(b'[{"start": 1, "text": "x"}]', format="json")
    with pytest.raises(TranscriptFormatError, match=r"^line 2: not valid JSON"):
        parse(b'[\n{"start": 1,,}]', format="json")


def test_format_for() -> None:
    assert [format_for(n) for n in ("a.SRT", "b.vtt", "dir.x/c.csv", "d.json")] == [
        "srt",
        "vtt",
        "csv",
        "json",
    ]
    for name in ("talk.txt", "srt", "dir.srt/file"):
        with pytest.raises(TranscriptFormatError, match=r"supported: \.csv, \.json, \.srt, \.vtt"):
            format_for(name)
    with pytest.raises(TranscriptFormatError, match="unknown format 'ass'"):
        parse(b"", format="ass")


# -- normalize -------------------------------------------------------------------------


def test_normalize_sorts_drops_empty_trims_and_merges() -> None:
    cues = [
        Cue(10.0, 12.0, "late", line=20),
        Cue(0.0, 3.0, "first", speaker="A", line=2),
        Cue(2.0, 4.0, "second", line=6),  # starts 2 s into "first": trim "first" to 2.0
        Cue(4.0, 5.0, "   ", line=10),  # empty: dropped
        Cue(5.0, 6.0, "third", speaker="B", line=14),
        Cue(5.1, 7.0, "fourth", speaker="C", line=17),  # 0.1 s after "third": merge
    ]
    result, notes = normalize(cues)
    assert result == [
        Cue(0.0, 2.0, "first", speaker="A", line=2),
        Cue(2.0, 4.0, "second", line=6),
        Cue(5.0, 7.0, "third fourth", speaker="B", line=14),
        Cue(10.0, 12.0, "late", line=20),
    ]
    assert notes == [
        "line 10: dropped a cue with no text",
        "cues were not in time order; sorted them by start time",
        "line 2: trimmed end from 00:00:03.000 to 00:00:02.000 to avoid overlapping line 6",
        "line 14: merged with line 17 into one cue 00:00:05.000-00:00:07.000: they overlap "
        "and trimming would leave less than 0.2 s",
    ]


def test_normalize_keeps_touching_cues_and_merges_a_cue_inside_a_short_one() -> None:
    touching = [Cue(0, 1, "a", line=1), Cue(1, 2, "b", line=2)]
    assert normalize(touching) == (touching, [])
    result, notes = normalize([Cue(0, 5, "a", line=1), Cue(0, 1, "b", line=4)])
    assert result == [Cue(0, 5, "a b", line=1)]
    assert notes[0].startswith("line 1: merged with line 4")


def test_normalize_errors() -> None:
    with pytest.raises(TranscriptFormatError) as caught:
        normalize([Cue(0, 1, "a", line=2), Cue(3, 3, "b", line=9)])
    assert str(caught.value).startswith("line 9: the cue ends (00:00:03.000) at or before")
    with pytest.raises(TranscriptFormatError, match="no cues found"):
        normalize([])
    with pytest.raises(TranscriptFormatError, match="no cues found"):
        normalize([Cue(0, 1, "", line=3)])
    _, notes = normalize([Cue(0, 2, "a"), Cue(1, 3, "b")])  # JSON: no lines
    assert notes == [
        "the cue at 00:00:00.000: trimmed end from 00:00:02.000 to 00:00:01.000 "
        "to avoid overlapping the cue at 00:00:01.000"
    ]


def test_normalize_drops_invisible_text_and_refuses_control_characters() -> None:
    result, notes = normalize([Cue(0, 1, "\u200b \u2060", line=2), Cue(1, 2, "Oui", line=5)])
    assert result == [Cue(1, 2, "Oui", line=5)]
    assert notes == ["line 2: dropped a cue with no text"]
    with pytest.raises(TranscriptFormatError) as caught:
        normalize([Cue(0, 1, "Bon\x00jour", line=7)])
    assert (
        str(caught.value) == "line 7: the text must not contain control characters (found U+0000)"
    )
    with pytest.raises(TranscriptFormatError, match=r"^the cue at 00:00:01.500: the text must not"):
        normalize([Cue(1.5, 2, "a\x07")])  # JSON: no line


# -- hostile input: errors, never crashes, and never the whole input in a message --------

HUGE = "9" * 400  # an integer too large for a float
ENORMOUS = "9" * 5000  # more digits than Python converts to an int


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'{"segments": ' + b"[" * 5000 + b"]" * 5000 + b"}", "json", "nested too deeply"),
        (b"[" * 100_000, "json", "nested too deeply"),
        (
            b'{"segments": [{"start": 0, "end": 1, "text": "Bonjour \\ud800"}]}',
            "json",
            "segment 0: 'text' holds \\ud800, a lone surrogate",
        ),
        (
            b'[{"start": 0, "end": 1, "text": "a", "speaker": "\\udfff"}]',
            "json",
            "segment 0: 'speaker' holds \\udfff",
        ),
        (b'[{"start": 0, "end": ' + HUGE.encode() + b', "text": "a"}]', "json", "too large"),
        (b'[{"start": 0, "end": 1e999, "text": "a"}]', "json", "too large"),
        (b'[{"start": -0.5, "end": 1, "text": "a"}]', "json", "must be a finite, non-negative"),
        (b'[{"start": 0, "end": ' + ENORMOUS.encode() + b', "text": "a"}]', "json", "digits"),
        (b'[{"start": "' + ENORMOUS.encode() + b':00:00", "end": 1, "text": "a"}]', "json", ""),
        (b'[{"start": 0, "end": 1, "text": "a", "speaker": ' + HUGE.encode() + b"}]", "json", ""),
        (b'[{"start": 0, "end": 1, "text": ' + b"[" * 900 + b"]" * 900 + b"}]", "json", ""),
        (b'[{"start": 0, "end": 1, "text": "a\\u0000"}]', "json", "control characters"),
        (
            b"1\n" + ENORMOUS.encode() + b":00:00,000 --> 00:00:01,000\nHi\n",
            "srt",
            "line 2: bad timing line",
        ),
        (b"1\n99999:59:59,999 --> 100000:00:00,000\nHi\n", "srt", "line 2: bad timing line"),
        (b"WEBVTT\n\n" + ENORMOUS.encode() + b":00.000 --> 00:01.000\nHi\n", "vtt", "line 3"),
        (b"start_time,end_time,transcription\n0," + HUGE.encode() + b",Hi\n", "csv", "too large"),
        (
            b"start_time,end_time,transcription\n0,99999999999,Hi\n",
            "csv",
            "line 2: end_time is too large: times must be below 100,000 hours",
        ),
        (
            b"start_time,end_time,transcription\n" + ENORMOUS.encode() + b":00:00:00,1,Hi\n",
            "csv",
            "",
        ),
        (b"start_time,end_time,transcription\n0,1,Hi\x00\n", "csv", "control characters"),
        (b"x" * 100_000 + b"\n", "srt", "line 1: expected a cue timing line"),
    ],
)
def test_hostile_files_are_format_errors_with_short_messages(
    data: bytes, fmt: str, message: str
) -> None:
    with pytest.raises(TranscriptFormatError) as caught:
        normalize(parse(data, format=fmt))
    assert message in str(caught.value)
    assert len(str(caught.value)) < 300


def test_a_csv_frame_rate_is_above_0_and_at_most_240() -> None:
    data = b"start_time,end_time,transcription\n0:00:00:00,0:00:01:00,Hi\n"
    assert parse(data, format="csv", csv_fps=240)[0].end == 1.0
    for fps in (1e9, 240.5, 0.0, -24.0, float("nan"), float("inf")):
        with pytest.raises(TranscriptFormatError, match="at most 240"):
            parse(data, format="csv", csv_fps=fps)


def test_times_up_to_100000_hours_are_read() -> None:
    srt = b"1\n99999:00:00,000 --> 99999:59:59,999\nHi\n"
    assert parse(srt, format="srt")[0].end == 99999 * 3600 + 3599.999
    assert (
        parse(b'[{"start": 0, "end": 359999999, "text": "a"}]', format="json")[0].end == 359999999
    )


# -- load_transcript -------------------------------------------------------------------


def segments(transcript: pb.Transcript) -> list[tuple[int, int, str, str]]:
    return [
        (s.start.ToMilliseconds(), s.end.ToMilliseconds(), s.text, s.speaker)
        for s in transcript.segments
    ]


EXPECTED = [(1000, 2000, "Bonjour", "A"), (2000, 4500, "Ça déjà été", "B")]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        (
            "t.srt",
            # Overlapping cue: the first is trimmed to end at 2.0 (a note says so).
            "1\r\n00:00:01,000 --> 00:00:02,500\r\n<v A>Bonjour\r\n\r\n"
            "2\r\n00:00:02,000 --> 00:00:04,500\r\n<v B>Ça déjà\r\nété\r\n".encode("cp1252"),
        ),
        (
            "t.vtt",
            codecs.BOM_UTF8
            + "WEBVTT\n\n00:01.000 --> 00:02.000\n<v A>Bonjour\n\n"
            "NOTE x\n\n00:02.000 --> 00:04.500 align:start\n<v B>Ça déjà été\n".encode(),
        ),
        (
            "t.csv",
            codecs.BOM_UTF16_LE
            + (
                CSV_HEADER + 'A,"0:00:01,000",0:00:02:00,Hello,Bonjour\r\n'
                "B,2,0:00:04:12,Already been,Ça déjà été\r\n"
            ).encode("utf-16-le"),
        ),
        (
            "t.json",
            b'[{"start": 1, "end": 2, "text": "Bonjour", "speaker": "A"},'
            b' {"start": 2, "end": 4.5, "text": "\\u00c7a d\\u00e9j\\u00e0 \\u00e9t\\u00e9",'
            b' "speaker": "B"}]',
        ),
    ],
)
def test_load_transcript_round_trip(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    notes: list[str] = []
    assert segments(load_transcript(path, csv_fps=24, on_note=notes.append)) == EXPECTED
    if name == "t.srt":
        assert notes == [
            "line 2: trimmed end from 00:00:02.500 to 00:00:02.000 to avoid overlapping line 6"
        ]
    else:
        assert notes == []


def test_load_transcript_logs_notes_without_a_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.srt"
    path.write_text("00:00:01,000 --> 00:00:03,000\nA\n\n00:00:02,000 --> 00:00:04,000\nB\n")
    with caplog.at_level("WARNING"):
        load_transcript(path)
    assert f"{path}: line 1: trimmed end" in caplog.text


def test_load_transcript_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\n00:01:xx,000 --> 00:01:02,000\nB\n")
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert str(caught.value) == (
        f"{path}: line 6: bad timing line '00:01:xx,000 --> 00:01:02,000', "
        "expected '00:00:01,000 --> 00:00:02,500'"
    )
    empty = tmp_path / "empty.vtt"
    empty.write_bytes(b"WEBVTT\n\n")
    with pytest.raises(TranscriptError, match=r"empty\.vtt: no cues found"):
        load_transcript(empty)
