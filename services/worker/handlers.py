"""What a worker does with one kind of job, once delivery has claimed it.

:mod:`worker.delivery` owns the message: decoding, the claim, the lease, the
events and the retry-or-fail decision. A :class:`JobHandler` owns the work: it
runs one claimed job and returns its :class:`Outcome`, or raises one of the
errors whose type decides what happens next (``worker.providers.errors``,
``worker.background``). One handler per (job kind, provider) a worker serves;
the worker subscribes to each, and advertises what its handlers can do.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nats.js.object_store import ObjectStore

from dubbing import artifacts, bus
from dubbing.v1 import dubbing_pb2 as pb
from worker.background import BackgroundFetcher
from worker.providers import Provider
from worker.transcript import PROGRESS, Report, dub_transcript


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job done: its stored result and what it consumed (what the job is billed for)."""

    result: bus.ResultInfo
    generated_audio_seconds: float
    characters: int


class JobHandler(Protocol):
    @property
    def kind(self) -> bus.JobKind: ...

    @property
    def provider_name(self) -> str: ...

    @property
    def provider(self) -> Provider: ...

    async def run(
        self, job: bus.JobMessage, request: pb.DubRequest, run: bus.RunRef, report: Report
    ) -> Outcome:
        """Do the job; store its result under `run`'s object name."""
        ...


class TranscriptHandler:
    """Transcript dubbing: synthesize, fit, mix, encode, store (``worker.transcript``)."""

    kind = bus.JobKind.TRANSCRIPT

    def __init__(
        self,
        provider_name: str,
        provider: Provider,
        *,
        results: ObjectStore,
        fetcher: BackgroundFetcher,
        work_dir: str = "",
    ) -> None:
        self.provider_name = provider_name
        self.provider = provider
        self._results = results
        self._fetcher = fetcher
        self._work_dir = work_dir or None

    async def run(
        self, job: bus.JobMessage, request: pb.DubRequest, run: bus.RunRef, report: Report
    ) -> Outcome:
        # Everything the job writes (dub track, background, encoded result) lives here
        # and goes when the attempt ends, however it ends.
        with tempfile.TemporaryDirectory(
            prefix=f"dubbing-{job.job_id}-", dir=self._work_dir
        ) as tmp:
            out = await dub_transcript(
                request, self.provider, report, Path(tmp), fetcher=self._fetcher
            )
            await report("uploading", PROGRESS["uploading"])
            name = bus.result_object_name(run.job_id, run.attempt, run.run_id)
            stored = await artifacts.put(self._results, name, out.path)
        return Outcome(
            result=bus.ResultInfo(
                artifact=stored.name,
                format=out.format,
                sample_rate_hz=out.sample_rate_hz,
                duration_seconds=out.duration_seconds,
                size_bytes=stored.size,
                sha256=stored.sha256,
                timing=out.timing,
                loudness_lufs=out.loudness_lufs,
                channels=out.channels,
            ),
            generated_audio_seconds=out.generated_audio_seconds,
            characters=out.characters,
        )
