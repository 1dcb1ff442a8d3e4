"""bench.transcript_gen: the benchmark's transcript is valid, realistic and repeatable."""

from __future__ import annotations

import itertools

from bench import transcript_gen
from bench.transcript_gen import dub_request, generate, to_json
from dubbing.transcripts import normalize, parse
from dubbing.v1 import dubbing_pb2 as pb
from gateway.validation import Limits, validate_dub_request


def test_default_request_passes_the_gateways_validation() -> None:
    lines = generate()
    request = dub_request(lines, request_id="bench-audio")
    assert validate_dub_request(request, Limits()) == []
    assert request.provider == "local" and request.target_language == "fr"
    assert request.transcript.output.format == pb.AUDIO_FORMAT_MP3
    assert request.transcript.output.sample_rate_hz == 24_000
    assert len(request.transcript.script.segments) == 1500


def test_three_hour_request_passes_the_gateways_validation() -> None:
    lines = generate(180, 3000)
    assert validate_dub_request(dub_request(lines), Limits()) == []
    assert lines[-1].end == 10_800.0


def test_windows_are_realistic() -> None:
    lines = generate(90, 1500)
    assert lines[-1].end == 5400.0
    lengths = [x.end - x.start for x in lines]
    gaps = [b.start - a.end for a, b in itertools.pairwise(lines)]
    assert min(lengths) >= 0.75 and max(lengths) <= 7.5
    assert min(gaps) >= 0.09 and max(gaps) <= 3.0
    assert len({x.speaker for x in lines}) >= 3
    assert len({x.text for x in lines}) >= 100
    # Texts short and long for their windows (at the voice's normal rate).
    fill = [len(x.text) / transcript_gen.CHARS_PER_SECOND / (x.end - x.start) for x in lines]
    assert sum(f > 1.5 for f in fill) >= 50
    assert sum(f < 0.5 for f in fill) >= 100


def test_has_runs_the_worker_stitches() -> None:
    lines = generate(90, 1500)
    stitchable = [
        (a, b)
        for a, b in itertools.pairwise(lines)
        if a.speaker == b.speaker
        and b.start - a.end <= 0.3
        and a.end - a.start <= 1.5
        and b.end - b.start <= 1.5
    ]
    assert len(stitchable) >= 50


def test_is_deterministic_and_seeded() -> None:
    assert generate(10, 150) == generate(10, 150)
    assert generate(10, 150, seed=2) != generate(10, 150)


def test_json_reads_back_as_the_same_transcript() -> None:
    lines = generate(10, 150)
    cues, notes = normalize(parse(to_json(lines).encode(), format="json"))
    assert notes == []
    assert [(c.start, c.end, c.text, c.speaker) for c in cues] == [
        (x.start, x.end, x.text, x.speaker) for x in lines
    ]
