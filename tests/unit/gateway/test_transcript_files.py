"""The gateway reads a transcript file in a request into segments before validation."""

from __future__ import annotations

import pytest

from dubbing.v1 import dubbing_pb2 as pb
from gateway import transcript_files
from gateway.transcript_files import MAX_FILE_BYTES, UnreadableFile, expand

FILE = "request.transcript.file"
SRT = (
    "1\r\n00:00:01,000 --> 00:00:03,000\r\nÇa a déjà été fait.\r\n\r\n"
    "2\r\n00:00:02,500 --> 00:00:05,000\r\n<i>Deux</i>\r\nlignes\r\n"
)


def with_file(file: pb.TranscriptFile) -> pb.DubRequest:
    return pb.DubRequest(target_language="fr", transcript=pb.TranscriptDubbing(file=file))


def test_segments_pass_through_untouched() -> None:
    request = pb.DubRequest(
        target_language="fr",
        transcript=pb.TranscriptDubbing(script=pb.Transcript(segments=[pb.Segment(text="a")])),
    )
    assert expand(request) == (request, [])


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252", "utf-8-sig"])
def test_a_file_becomes_segments_with_warnings(encoding: str) -> None:
    request = with_file(pb.TranscriptFile(content=SRT.encode(encoding), filename="talk.SRT"))
    request.transcript.voice.gender = pb.GENDER_MALE
    expanded, warnings = expand(request)
    assert expanded.transcript.WhichOneof("source") == "script"
    segments = [
        (s.start.ToNanoseconds(), s.end.ToNanoseconds(), s.text)
        for s in expanded.transcript.script.segments
    ]
    assert segments == [
        (1_000_000_000, 2_500_000_000, "Ça a déjà été fait."),
        (2_500_000_000, 5_000_000_000, "Deux lignes"),
    ]
    assert warnings == [
        "line 2: trimmed end from 00:00:03.000 to 00:00:02.500 to avoid overlapping line 6"
    ]
    # Everything else in the request is kept.
    assert expanded.transcript.voice.gender == pb.GENDER_MALE
    assert expanded.target_language == "fr"
    assert request.transcript.WhichOneof("source") == "file"  # the input is not modified


def test_csv_frame_rate_is_passed_on() -> None:
    csv = (
        "speaker,start_time,end_time,transcription,translation\nA,0:00:01:12,0:00:02:00,Hi,Salut\n"
    )
    with pytest.raises(UnreadableFile):
        expand(with_file(pb.TranscriptFile(content=csv.encode(), format="csv")))
    expanded, _ = expand(
        with_file(pb.TranscriptFile(content=csv.encode(), format="csv", csv_fps=24))
    )
    (segment,) = expanded.transcript.script.segments
    assert (segment.start.ToNanoseconds(), segment.text) == (1_500_000_000, "Salut")


@pytest.mark.parametrize(
    ("file", "field", "says"),
    [
        (
            pb.TranscriptFile(content=b"1\n00:00:xx,000 --> 00:00:03,000\nHi\n", format="srt"),
            "request.transcript.file.content",
            "line 2",
        ),
        (
            pb.TranscriptFile(content=b"", format="srt"),
            "request.transcript.file.content",
            "no cues",
        ),
        (
            pb.TranscriptFile(content=b"x", filename="talk.docx"),
            "request.transcript.file.filename",
            ".docx",
        ),
        (pb.TranscriptFile(content=b"x"), "request.transcript.file.filename", "no extension"),
        (pb.TranscriptFile(content=b"x", format="ass"), "request.transcript.file.format", "'ass'"),
        (
            pb.TranscriptFile(content=b"x", format="csv", csv_fps=-1),
            "request.transcript.file.csv_fps",
            "above 0",
        ),
        (  # the limit a media job's csv_fps has
            pb.TranscriptFile(content=b"x", format="csv", csv_fps=1e9),
            "request.transcript.file.csv_fps",
            "at most 240",
        ),
        (
            pb.TranscriptFile(content=b"x", format="csv", csv_fps=float("nan")),
            "request.transcript.file.csv_fps",
            "at most 240",
        ),
        (
            pb.TranscriptFile(content=b"x" * (MAX_FILE_BYTES + 1), format="srt"),
            "request.transcript.file.content",
            "at most",
        ),
    ],
)
def test_unreadable_files_name_the_field(file: pb.TranscriptFile, field: str, says: str) -> None:
    with pytest.raises(transcript_files.UnreadableFile) as caught:
        expand(with_file(file))
    assert caught.value.field == field
    assert says in caught.value.description


def test_warnings_are_capped() -> None:
    # Every empty cue dropped is a warning: an 8 MiB file could have hundreds of thousands.
    empty = "".join(
        f"{i}\n00:00:{i % 60:02d},000 --> 00:00:{i % 60:02d},500\n\n" for i in range(300)
    )
    srt = empty + "999\n00:01:00,000 --> 00:01:02,000\nBonjour\n"
    expanded, warnings = expand(with_file(pb.TranscriptFile(content=srt.encode(), format="srt")))
    assert len(expanded.transcript.script.segments) == 1
    assert len(warnings) == transcript_files.MAX_WARNINGS
    assert (
        warnings[-1] == f"... and {300 - transcript_files.MAX_WARNINGS + 1} more changes like these"
    )
