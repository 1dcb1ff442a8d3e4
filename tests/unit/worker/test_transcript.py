"""worker.transcript's plan: what a request decides, before any work is done."""

from __future__ import annotations

import pytest

from dubbing.v1 import dubbing_pb2 as pb
from tests.helpers import segment, transcript_request
from worker import timing
from worker.providers import Capabilities, Gender, Language
from worker.transcript import PROGRESS, plan

CAPS = Capabilities(
    provider="local",
    languages=(Language("fr", "French", (Gender.FEMALE, Gender.MALE)),),
    min_speed=0.5,
    max_speed=2.0,
    max_chars_per_request=1000,
)


def test_plan_of_a_plain_request() -> None:
    request = transcript_request([segment(0.5, 2.0, "Bonjour.", "A"), segment(3.0, 4.5, "Salut.")])
    job = plan(request, CAPS)
    assert job.windows == [
        timing.Window(0, 0.5, 2.0, "Bonjour.", "A"),
        timing.Window(1, 3.0, 4.5, "Salut.", ""),
    ]
    assert (job.language, job.gender, job.fmt, job.sample_rate) == (
        "fr",
        Gender.FEMALE,
        "wav",
        24_000,
    )
    assert (job.base_speed, job.min_speed, job.max_speed) == (1.0, 0.5, 2.0)
    assert job.policy == timing.FitPolicy()
    assert job.background is None and job.channels == 0


@pytest.mark.parametrize(("asked", "base"), [(1.5, 1.5), (3.0, 2.0), (0.1, 0.5)])
def test_the_caller_s_speed_is_the_base_the_engine_works_from(asked: float, base: float) -> None:
    request = transcript_request()
    request.transcript.voice.settings.speed = asked
    job = plan(request, CAPS)
    assert job.base_speed == base  # kept within what the provider renders
    # The engine's rates are relative to it: together they span the provider's range.
    assert (job.min_speed * base, job.max_speed * base) == pytest.approx((0.5, 2.0))


def test_plan_follows_the_output_and_timing_options() -> None:
    request = transcript_request(gender=pb.GENDER_MALE, output_format=pb.AUDIO_FORMAT_MP3)
    request.transcript.output.loudness_lufs = -23.0
    request.transcript.output.channels = 2
    request.transcript.timing.max_stretch_ratio = 1.3
    request.transcript.timing.use_stitching = False
    request.transcript.background.url = "https://example.com/bed.wav"
    job = plan(request, CAPS)
    assert (job.gender, job.fmt, job.loudness_lufs, job.channels) == (Gender.MALE, "mp3", -23.0, 2)
    assert job.policy == timing.FitPolicy(max_stretch=1.3, use_stitching=False)
    assert job.background is not None and job.background.url == "https://example.com/bed.wav"


def test_progress_stages_come_in_order() -> None:
    assert list(PROGRESS) == ["synthesizing", "mixing", "uploading"]
    assert sorted(PROGRESS.values()) == list(PROGRESS.values())
    assert all(0.0 <= v < 1.0 for v in PROGRESS.values())
