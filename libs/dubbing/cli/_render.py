"""How the CLI shows jobs, results, tables and errors (rich, no I/O besides printing)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC

from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from dubbing import errors
from dubbing.client import DeadlineExceeded, DubbingError, JobFailed, Unavailable
from dubbing.conventions import NAME_BY_GENDER
from dubbing.jobstate import NAME_BY_FORMAT, seconds
from dubbing.v1 import dubbing_pb2 as pb

# Consoles resolve sys.stdout / sys.stderr when they print, so redirections (and
# typer's CliRunner) see the output. Nothing is interpreted as rich markup: job
# messages and field names come from the service and may contain brackets.
out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def state_name(state: pb.Job.State.ValueType) -> str:
    return pb.Job.State.Name(state).removeprefix("STATE_")


def format_name(fmt: pb.AudioFormat.ValueType) -> str:
    return NAME_BY_FORMAT.get(fmt, "unspecified")


def when(ts: timestamp_pb2.Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def progress_line(job: pb.Job) -> str:
    """``RUNNING synthesizing 40% (attempt 1)``: one line per change when not on a terminal."""
    text = f"{state_name(job.state)} {job.stage or '-'} {job.progress * 100:.0f}%"
    if job.attempt:
        text += f" (attempt {job.attempt})"
    return text


def result_lines(job: pb.Job) -> list[str]:
    """What a SUCCEEDED job produced, for stdout."""
    r = job.result
    length = seconds(r.duration)
    rate = f", {r.sample_rate_hz} Hz" if r.sample_rate_hz else ""
    rate += ", stereo" if r.channels == 2 else ""
    return [
        f"job {job.id} SUCCEEDED",
        f"  duration  {length:.2f} s",
        f"  format    {format_name(r.format)}{rate}"
        + (f", {r.loudness_lufs:.1f} LUFS" if r.loudness_lufs else ""),
        f"  size      {human_bytes(r.size_bytes)} (sha256 {r.sha256 or '-'})",
        f"  artifact  {r.artifact}",
        *([f"  timing    {timing_summary(r.timing)}"] if r.timing.summary.segments else []),
    ]


def timing_summary(report: pb.TimingReport) -> str:
    """One line: how well the speech fits the transcript's windows."""
    s = report.summary
    return (
        f"{s.segments} segments, {s.share_duration_error_over300ms:.0%} off by > 0.3 s "
        f"({s.share_shorter_over300ms:.0%} shorter, {s.share_longer_over300ms:.0%} longer), "
        f"stretch mean {s.mean_stretch:.2f} max {s.max_stretch:.2f}, "
        f"{s.truncations} truncated, start offset <= {seconds(s.max_start_offset) * 1000:.0f} ms"
    )


_REMEDY_NAMES = {
    pb.TIMING_REMEDY_NATIVE_RATE: "rate",
    pb.TIMING_REMEDY_TRIM_SILENCE: "trim",
    pb.TIMING_REMEDY_BORROW_SILENCE: "borrow",
    pb.TIMING_REMEDY_TIME_STRETCH: "stretch",
    pb.TIMING_REMEDY_TRUNCATE: "truncate",
}


def timing_table(report: pb.TimingReport) -> Table:
    """Per segment: window, where the speech is, what was done to make it fit."""
    table = Table(box=None, pad_edge=False)
    for name in ("#", "window", "speech", "speed", "stretch", "remedies", "overrun"):
        table.add_column(name, justify="right" if name not in ("remedies",) else "left")
    for t in report.segments:
        remedies = ", ".join(_REMEDY_NAMES.get(r, str(r)) for r in t.remedies)
        if t.stitched_with:
            remedies += f" (with {', '.join(map(str, t.stitched_with))})"
        table.add_row(
            str(t.index),
            f"{seconds(t.window_start):.2f}-{seconds(t.window_end):.2f}",
            f"{seconds(t.speech_start):.2f}-{seconds(t.speech_end):.2f}",
            f"{t.speed:.2f}",
            f"{t.stretch:.2f}",
            remedies or "-",
            f"{seconds(t.overrun):.2f}" if t.overrun.ToNanoseconds() else "-",
        )
    return table


def failure_text(job: pb.Job) -> Text:
    """Why a FAILED or CANCELLED job has no result, for stderr."""
    if job.state == pb.Job.State.STATE_CANCELLED:
        return Text.assemble(("cancelled:", "bold yellow"), f" job {job.id} was cancelled")
    failure = JobFailed(job)
    head = failure.code.name + (f" ({failure.reason})" if failure.reason else "")
    return Text.assemble(("failed:", "bold red"), f" job {job.id} {head}: {failure.message}")


def print_outcome(job: pb.Job) -> None:
    if job.state == pb.Job.State.STATE_SUCCEEDED:
        for line in result_lines(job):
            out.print(line)
    else:
        err.print(failure_text(job))


def print_error(exc: DubbingError, gateway: str) -> None:
    """``error: CODE (REASON): message`` then one indented line per field violation."""
    if isinstance(exc, Unavailable) and not exc.reason:
        headline = f"cannot reach the gateway at {gateway}: {exc.message}"
    elif isinstance(exc, DeadlineExceeded) and not exc.reason:
        headline = f"the gateway at {gateway} did not answer in time: {exc.message}"
    else:
        head = exc.code.name + (f" ({exc.reason})" if exc.reason else "")
        headline = f"{head}: {exc.message}"
    err.print(Text.assemble(("error:", "bold red"), " ", headline))
    for field, description in exc.field_violations:
        err.print(f"  {field}: {description}")
    if exc.metadata:
        details = ", ".join(f"{k}={v}" for k, v in sorted(exc.metadata.items()))
        err.print(f"  ({details})")


def print_message_error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message))


def print_table(table: Table) -> None:
    """Print a table; when stdout is not a terminal, wide enough that nothing is cut."""
    if out.is_terminal:
        out.print(table)
        return
    needed = Measurement.get(out, out.options.update_width(10_000), table).maximum
    wide = Console(
        file=sys.stdout, width=max(out.width, needed), highlight=False, markup=False, soft_wrap=True
    )
    wide.print(table)


def job_lines(job: pb.Job) -> list[str]:
    """``key  value`` lines describing a job, for ``dubbing get``."""
    req = job.request
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("state", state_name(job.state)),
        ("stage", f"{job.stage or '-'} ({job.progress * 100:.0f}%)"),
        ("attempt", str(job.attempt)),
        ("provider", req.provider or "-"),
        ("languages", f"{req.source_language or 'auto'} -> {req.target_language}"),
        ("request id", req.request_id or "-"),
        ("created", when(job.create_time)),
        ("started", when(job.start_time)),
        ("ended", when(job.end_time)),
        ("sequence", str(job.sequence)),
    ]
    if job.worker_id:
        rows.append(("worker", job.worker_id))
    if req.labels:
        rows.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(req.labels.items()))))
    if req.HasField("transcript"):
        rows.append(("segments", str(len(req.transcript.script.segments))))
    if job.state == pb.Job.State.STATE_SUCCEEDED:
        r = job.result
        rows += [
            ("duration", f"{seconds(r.duration):.2f} s"),
            (
                "format",
                f"{format_name(r.format)}, {r.sample_rate_hz} Hz"
                + (", stereo" if r.channels == 2 else ""),
            ),
            ("size", human_bytes(r.size_bytes)),
            ("sha256", r.sha256),
            ("artifact", r.artifact),
            ("audio", f"{job.usage.generated_audio_seconds:.2f} s generated"),
        ]
        if r.timing.summary.segments:
            rows.append(("timing", timing_summary(r.timing)))
    if job.state == pb.Job.State.STATE_FAILED:
        info = errors.error_info(job.error)
        rows.append(("reason", info.reason if info is not None else "-"))
        rows.append(("error", job.error.message))
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}" for key, value in rows]


def jobs_table(jobs: Iterable[pb.Job]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("STAGE")
    table.add_column("PROGRESS", justify="right")
    table.add_column("PROVIDER")
    table.add_column("LANG")
    table.add_column("CREATED", no_wrap=True)
    for job in jobs:
        table.add_row(
            job.id,
            state_name(job.state),
            job.stage or "-",
            f"{job.progress * 100:.0f}%",
            job.request.provider or "-",
            job.request.target_language or "-",
            when(job.create_time),
        )
    return table


def languages_table(providers: Iterable[pb.ProviderSupport]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("PROVIDER", no_wrap=True)
    table.add_column("LANGUAGE", no_wrap=True)
    table.add_column("NAME")
    table.add_column("GENDERS")
    table.add_column("WORKERS", justify="right")
    for provider in providers:
        workers = str(provider.live_workers)
        if not provider.languages:
            table.add_row(provider.provider, "-", "-", "-", workers)
        for language in provider.languages:
            genders = ", ".join(NAME_BY_GENDER.get(g, "unspecified") for g in language.genders)
            table.add_row(provider.provider, language.code, language.name, genders or "-", workers)
    return table
