"""The ``dubbing`` command line: submit, follow and fetch dubbing jobs.

Exit status: 0 on success; 1 for errors of the service or the connection, and for
``submit --wait`` when the job FAILED or was CANCELLED; 2 for invalid input (bad
options, an unreadable transcript, or INVALID_ARGUMENT from the service); 130 when
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf.json_format import MessageToJson
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from dubbing.client import (
    DubbingClient,
    DubbingError,
    InvalidArgument,
    RetryPolicy,
    TranscriptError,
    background_audio,
    load_transcript,
)
from dubbing.client._assets import is_asset_name, is_url
from dubbing.conventions import GENDER_BY_NAME
from dubbing.jobstate import FORMAT_BY_NAME, is_terminal
from dubbing.settings import ClientSettings
from dubbing.v1 import dubbing_pb2 as pb

from . import _render

# How the CLI retries UNAVAILABLE; tests replace it to avoid sleeping.
RETRY = RetryPolicy()

EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="dubbing",
    help="Submit and follow dubbing jobs on a dubbing gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


class Gender(enum.StrEnum):
    female = "female"
    male = "male"
    neutral = "neutral"


class AudioFormat(enum.StrEnum):
    wav = "wav"
    mp3 = "mp3"
    opus = "opus"
    flac = "flac"


class StateChoice(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@dataclass(frozen=True, slots=True)
class _Options:
    gateway: str


@app.callback()
def _root(
    ctx: typer.Context,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            envvar="DUBBING_GATEWAY",
            help="host:port of the gateway.",
            show_default="127.0.0.1:50051",
        ),
    ] = None,
) -> None:
    ctx.obj = _Options(gateway=gateway or ClientSettings().gateway)


def _run(ctx: typer.Context, work: Callable[[DubbingClient], Awaitable[int]]) -> None:
    """Run ``work`` with a client; turn expected errors into a message and an exit status."""
    options: _Options = ctx.obj

    async def main() -> int:
        async with DubbingClient(options.gateway, retry=RETRY) as client:
            return await work(client)

    try:
        status = asyncio.run(main())
    except DubbingError as exc:
        _render.print_error(exc, options.gateway)
        raise typer.Exit(
            EXIT_INVALID if isinstance(exc, InvalidArgument) else EXIT_FAILURE
        ) from None
    except OSError as exc:
        _render.print_message_error(str(exc))
        raise typer.Exit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        _render.print_message_error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if status:
        raise typer.Exit(status)


def _describe(job: pb.Job) -> str:
    return f"{_render.state_name(job.state).lower()} · {job.stage or '-'}"


def _attempt(job: pb.Job) -> str:
    return f"attempt {job.attempt}" if job.attempt else ""


async def _follow(client: DubbingClient, job_id: str, initial: pb.Job | None) -> pb.Job:
    """Follow the job with WatchJob until it is terminal, showing progress on stderr.

    A progress bar on a terminal; otherwise one line per visible change (for logs).
    Falls back to polling when the gateway does not implement WatchJob.
    """
    if initial is not None and is_terminal(initial):
        return initial
    try:
        if _render.err.is_terminal:
            return await _follow_bar(client, job_id, initial)
        return await _follow_lines(client, job_id, initial)
    except DubbingError as exc:
        if exc.code != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return await client.wait(job_id)


async def _follow_bar(client: DubbingClient, job_id: str, initial: pb.Job | None) -> pb.Job:
    last = initial
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[attempt]}", markup=False),
        TimeElapsedColumn(),
        console=_render.err,
    )
    with progress:
        task = progress.add_task(
            _describe(initial) if initial is not None else "connecting",
            total=1.0,
            attempt=_attempt(initial) if initial is not None else "",
        )
        if initial is not None:
            progress.update(task, completed=initial.progress)
        after = initial.sequence if initial is not None else 0
        async with contextlib.aclosing(client.watch(job_id, after_sequence=after)) as changes:
            async for job in changes:
                last = job
                progress.update(
                    task, description=_describe(job), completed=job.progress, attempt=_attempt(job)
                )
    if last is None:  # pragma: no cover - watch yields at least the terminal job
        return await client.get(job_id)
    return last


async def _follow_lines(client: DubbingClient, job_id: str, initial: pb.Job | None) -> pb.Job:
    last = initial
    shown = ""
    if initial is not None:
        shown = _render.progress_line(initial)
        _render.err.print(shown)
    after = initial.sequence if initial is not None else 0
    async with contextlib.aclosing(client.watch(job_id, after_sequence=after)) as changes:
        async for job in changes:
            last = job
            line = _render.progress_line(job)
            if line != shown:
                _render.err.print(line)
                shown = line
    if last is None:  # pragma: no cover - watch yields at least the terminal job
        return await client.get(job_id)
    return last


def _labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {value!r}", param_hint="--label")
        labels[key] = val
    return labels


@app.command()
def submit(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="Transcript: .json (segments with start, end, text, speaker), .srt, .vtt, "
            "or .csv (speaker,start_time,end_time,transcription,translation)."
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Target language (BCP-47), e.g. fr.")],
    source: Annotated[
        str, typer.Option("--from", help="Source language (BCP-47); empty detects it.")
    ] = "",
    provider: Annotated[str, typer.Option(help="Provider name, see `dubbing languages`.")] = (
        "local"
    ),
    gender: Annotated[Gender | None, typer.Option(help="Voice gender.")] = None,
    voice_id: Annotated[str, typer.Option("--voice-id", help="Provider voice id.")] = "",
    audio_format: Annotated[
        AudioFormat | None, typer.Option("--format", help="Result format.", show_default="wav")
    ] = None,
    sample_rate: Annotated[
        int, typer.Option("--sample-rate", help="Result sample rate in Hz; 0: 24000.", min=0)
    ] = 0,
    request_id: Annotated[
        str, typer.Option("--request-id", help="Idempotency key; default: a new UUID.")
    ] = "",
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value label; repeatable.")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Follow the job; exit 1 unless it SUCCEEDED (implied by --output)."
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the job's progress; exit 0 whatever the end.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Download the result here once it succeeded."),
    ] = None,
    csv_fps: Annotated[
        float | None,
        typer.Option(
            "--csv-fps",
            help="Frame rate of h:mm:ss:frame times in a .csv transcript.",
            show_default="inferred when unambiguous",
            min=0.001,
        ),
    ] = None,
    background: Annotated[
        str | None,
        typer.Option(
            "--background",
            metavar="SOURCE",
            help="Audio mixed under the dub: an http(s) URL, an asset name (assets/...), "
            "or a local file, uploaded first.",
        ),
    ] = None,
    background_gain: Annotated[
        float | None,
        typer.Option(
            "--background-gain",
            metavar="DB",
            help="Gain applied to the background, dB (-60..20).",
            show_default="0",
        ),
    ] = None,
    ducking: Annotated[
        float | None,
        typer.Option(
            "--ducking",
            metavar="DB",
            help="How far the background is lowered under speech, dB (0..40; 0: off).",
            show_default="12",
        ),
    ] = None,
    max_stretch: Annotated[
        float | None,
        typer.Option(
            "--max-stretch",
            metavar="RATIO",
            help="Largest time-stretch when fitting speech to a window (1.0..1.4).",
            show_default="1.25",
        ),
    ] = None,
    stitching: Annotated[
        bool | None,
        typer.Option(
            "--stitching/--no-stitching",
            help="Speak short fragments of one speaker as one utterance.",
            show_default="on",
        ),
    ] = None,
    precise: Annotated[
        bool,
        typer.Option("--precise", help="Lock every segment to its own window."),
    ] = False,
    loudness: Annotated[
        float | None,
        typer.Option(
            "--loudness",
            metavar="LUFS",
            help="Integrated loudness target of the result (-36..-14; -23: EBU R128).",
            show_default="-16",
        ),
    ] = None,
    channels: Annotated[
        int,
        typer.Option(
            "--channels",
            min=0,
            max=2,
            help="1 mono, 2 stereo; 0: stereo when the background is stereo.",
        ),
    ] = 0,
) -> None:
    """Submit a transcript for dubbing. Prints the job id first, on its own line.

    Changes made to an .srt, .vtt or .csv transcript on reading (overlapping cues
    trimmed or merged, empty cues dropped) are printed to stderr as warnings.
    """
    if wait and watch:
        raise typer.BadParameter("use either --wait or --watch", param_hint="--wait/--watch")
    labels = _labels(label or [])

    def warn(note: str) -> None:
        _render.err.print(Text.assemble(("warning:", "bold yellow"), " ", f"{file}: {note}"))

    if background is None and (background_gain is not None or ducking is not None):
        raise typer.BadParameter(
            "--background-gain and --ducking need --background", param_hint="--background"
        )
    upload: Path | None = None
    if background is not None and not (is_url(background) or is_asset_name(background)):
        upload = Path(background)
        if not upload.is_file():
            _render.print_message_error(
                f"--background {background}: no such file (give an http(s) URL, an asset "
                "name assets/..., or a local audio file)"
            )
            raise typer.Exit(EXIT_INVALID)
    try:
        transcript = load_transcript(file, csv_fps=csv_fps, on_note=warn)
    except TranscriptError as exc:
        _render.print_message_error(str(exc))
        raise typer.Exit(EXIT_INVALID) from None

    work = pb.TranscriptDubbing(script=transcript)
    if gender is not None or voice_id:
        work.voice.CopyFrom(
            pb.Voice(
                gender=GENDER_BY_NAME[gender.value]
                if gender is not None
                else pb.GENDER_UNSPECIFIED,
                voice_id=voice_id,
            )
        )
    if audio_format is not None or sample_rate or loudness is not None or channels:
        work.output.CopyFrom(
            pb.OutputOptions(
                format=FORMAT_BY_NAME[audio_format.value]
                if audio_format is not None
                else pb.AUDIO_FORMAT_UNSPECIFIED,
                sample_rate_hz=sample_rate,
                loudness_lufs=loudness or 0.0,
                channels=channels,
            )
        )
    if max_stretch is not None or stitching is not None or precise:
        work.timing.CopyFrom(
            pb.TimingOptions(use_precise_timing=precise, max_stretch_ratio=max_stretch or 0.0)
        )
        if stitching is not None:  # unset keeps the service default (on)
            work.timing.use_stitching = stitching
    request = pb.DubRequest(
        request_id=request_id,
        target_language=to,
        source_language=source,
        provider=provider,
        transcript=work,
        labels=labels,
    )
    strict = wait or output is not None
    follow = strict or watch

    async def run(client: DubbingClient) -> int:
        if background is not None:
            source = background
            if upload is not None:
                asset = await client.upload_asset(upload)
                _render.err.print(f"uploaded {upload} as {asset.name}")
                source = asset.name
            request.transcript.background.CopyFrom(
                background_audio(source, gain_db=background_gain or 0.0, ducking_db=ducking)
            )
        job = await client.submit(request)
        typer.echo(job.id)
        if not follow:
            return 0
        job = await _follow(client, job.id, job)
        _render.print_outcome(job)
        if job.state != pb.Job.State.STATE_SUCCEEDED:
            return EXIT_FAILURE if strict else 0
        if output is not None:
            result = await client.download(job.id, output)
            _render.out.print(f"saved {_render.human_bytes(result.size_bytes)} to {output}")
        return 0

    _run(ctx, run)


@app.command()
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="The file to upload, e.g. a background track.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the asset as JSON.")] = False,
) -> None:
    """Upload a file and print its asset name (assets/...), for --background."""

    async def run(client: DubbingClient) -> int:
        asset = await client.upload_asset(file)
        if as_json:
            typer.echo(MessageToJson(asset))
        else:
            typer.echo(asset.name)
        return 0

    _run(ctx, run)


@app.command()
def get(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    timing: Annotated[
        bool, typer.Option("--timing", help="Also print the per-segment timing report.")
    ] = False,
) -> None:
    """Show one job."""

    async def run(client: DubbingClient) -> int:
        job = await client.get(job_id)
        if as_json:
            typer.echo(MessageToJson(job))
            return 0
        for line in _render.job_lines(job):
            _render.out.print(line)
        if timing and job.result.timing.segments:
            _render.print_table(_render.timing_table(job.result.timing))
        return 0

    _run(ctx, run)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[
        list[StateChoice] | None,
        typer.Option("--state", help="Only jobs in this state; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """List jobs, newest first."""
    states = [pb.Job.State.Value(f"STATE_{s.value.upper()}") for s in state or []]

    async def run(client: DubbingClient) -> int:
        jobs: list[pb.Job] = []
        async with contextlib.aclosing(
            client.list(states=states, page_size=min(limit, 1000))
        ) as pages:
            async for job in pages:
                jobs.append(job)
                if len(jobs) >= limit:
                    break
        if as_json:
            typer.echo(MessageToJson(pb.ListJobsResponse(jobs=jobs)))
        elif jobs:
            _render.print_table(_render.jobs_table(jobs))
        else:
            _render.err.print("no jobs")
        return 0

    _run(ctx, run)


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
) -> None:
    """Cancel a queued or running job."""

    async def run(client: DubbingClient) -> int:
        job = await client.cancel(job_id)
        _render.out.print(f"job {job.id} {_render.state_name(job.state)}")
        return 0

    _run(ctx, run)


@app.command()
def languages(
    ctx: typer.Context,
    provider: Annotated[str, typer.Option(help="Only this provider.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Providers, languages and voice genders that live workers serve now."""

    async def run(client: DubbingClient) -> int:
        providers = await client.languages(provider)
        if as_json:
            typer.echo(MessageToJson(pb.ListLanguagesResponse(providers=providers)))
        elif providers:
            _render.print_table(_render.languages_table(providers))
        else:
            _render.err.print("no live workers advertise any provider")
        return 0

    _run(ctx, run)


@app.command()
def download(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the audio.")],
) -> None:
    """Download the result of a SUCCEEDED job (verified against its size and sha256)."""

    async def run(client: DubbingClient) -> int:
        result = await client.download(job_id, output)
        _render.out.print(
            f"saved {_render.human_bytes(result.size_bytes)} of "
            f"{_render.format_name(result.format)} to {output}"
        )
        return 0

    _run(ctx, run)


@app.command()
def watch(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
) -> None:
    """Follow a job's progress until it ends, then show its result or failure."""

    async def run(client: DubbingClient) -> int:
        job = await _follow(client, job_id, None)
        _render.print_outcome(job)
        return 0

    _run(ctx, run)


def main() -> None:
    """Entry point of the ``dubbing`` console script."""
    app()
