"""Transcript dubbing's audio path on a long programme: ``make bench-audio``.

One run, phases one after another so they do not compete for the two cores:

1. OURS: the worker's whole assembly (local-voice synthesis, fitting, mixing,
   loudness, mp3 encoding) on a generated 90-minute, 1,500-segment French
   transcript (bench.transcript_gen), through ``worker.transcript.dub_transcript``.
2. FLOOR: the same ffmpeg binary encoding a programme of the same length to mp3 with
   the worker's encoder options, from float32 PCM already on disk (noise shaped like
   the transcript's speech, written before the clock starts): only the encode.
3. PEERS: the per-segment-process approach, following open-dubbing's documented
   rule (trim trailing silence; a take longer than its window is sped up with ffmpeg
   ``atempo``, speed-up only, capped at 1.3x; one ffmpeg process per segment):
   synthesize each segment once at the normal rate with the same local voice, write
   each take to a wav file, run one ffmpeg per over-long take, read the results
   back, place them on a track, encode it like the floor. Its stretch step is timed
   on its own, next to OUR stretch (Rubber Band in-process, worker.timing.dsp.stretch)
   on the same takes and ratios.
4. RSS: OURS on a 180-minute, 3,000-segment programme in a child process; its peak
   resident memory (VmHWM) and that of the ffmpeg it runs.

Goals (from the issue): OURS <= 2x FLOOR; OURS >= 10x faster than PEERS; peak RSS
under 1 GiB for a 3-hour programme. The bench is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import numpy.typing as npt
import scipy.signal

from bench.transcript_gen import Line, dub_request, generate
from dubbing.v1 import dubbing_pb2 as pb
from worker import assembly, providers, transcript
from worker.providers import Gender, Provider, SynthesisRequest
from worker.timing import dsp

RATE = 24_000  # the request's output rate, and the track's
MP3 = "mp3"
# open-dubbing: speed-up only, at most 1.3x, after trimming trailing silence.
PEER_MAX_SPEED = 1.3
PEER_SILENCE_DB = -40.0  # what counts as trailing silence (the worker's threshold)
GIB = 1 << 30
CHILD_MARK = "child_rss "


# --- measuring ---------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads) and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Span:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Span]:
    span = Span()
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        yield span
    finally:
        span.wall = time.perf_counter() - wall0
        span.cpu = cpu_seconds() - cpu0


def proc_status(pid: int | str, key: str) -> int:
    """A memory figure (VmHWM, VmRSS) of a process in bytes, from /proc (Linux); 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child_pids(parent: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(entry.name))
    return out


class TreeSampler(threading.Thread):
    """Polls this process's children (the ffmpeg the worker runs) every `interval`.

    getrusage cannot tell: a child's ru_maxrss starts from the parent's resident set
    at fork, so it reports the Python process's peak, not ffmpeg's. /proc can: an
    exec'd process's VmHWM is its own.
    """

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.ffmpeg_peak = 0  # largest VmHWM of a child
        self.tree_peak = 0  # largest sampled VmRSS of this process plus its children
        self._done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._done.wait(self.interval):
            together = proc_status("self", "VmRSS")
            for pid in child_pids(me):
                self.ffmpeg_peak = max(self.ffmpeg_peak, proc_status(pid, "VmHWM"))
                together += proc_status(pid, "VmRSS")
            self.tree_peak = max(self.tree_peak, together)

    def stop(self) -> None:
        self._done.set()
        self.join()


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


# --- OURS ----------------------------------------------------------------------------


async def _no_report(stage: str, progress: float) -> None:
    return None


@dataclass(frozen=True)
class Dubbed:
    path: Path
    duration: float
    loudness: float
    timing: pb.TimingReport


async def dub(request: pb.DubRequest, provider: Provider, workdir: Path) -> Dubbed:
    result = await transcript.dub_transcript(request, provider, _no_report, workdir)
    report = pb.TimingReport.FromString(base64.b64decode(result.timing))
    return Dubbed(result.path, result.duration_seconds, result.loudness_lufs, report)


def timing_lines(report: pb.TimingReport) -> list[str]:
    s = report.summary
    used: dict[str, int] = {}
    for seg in report.segments:
        for remedy in seg.remedies:
            name = pb.TimingRemedy.Name(remedy).removeprefix("TIMING_REMEDY_").lower()
            used[name] = used.get(name, 0) + 1
    stitched = sum(1 for seg in report.segments if seg.stitched_with)
    return [
        f"segments {s.segments}, share off by > 0.3 s {s.share_duration_error_over300ms:.1%} "
        f"({s.share_shorter_over300ms:.1%} shorter, {s.share_longer_over300ms:.1%} longer), "
        f"mean stretch {s.mean_stretch:.3f}, max stretch {s.max_stretch:.3f}, "
        f"truncations {s.truncations}, max start offset "
        f"{s.max_start_offset.ToNanoseconds() / 1e6:.1f} ms",
        "remedies: " + ", ".join(f"{k} {v}" for k, v in used.items()) + f"; stitched {stitched}",
    ]


async def run_ours(request: pb.DubRequest, workdir: Path) -> tuple[Span, Dubbed]:
    provider = providers.create("local")
    # Load the voice before the clock starts (a worker has it loaded already).
    await provider.synthesize(SynthesisRequest(text="Bonjour.", language="fr"))
    with timed() as span:
        dubbed = await dub(request, provider, workdir)
    await provider.aclose()
    return span, dubbed


# --- FLOOR -----------------------------------------------------------------------------

# Paul Kellet's economy pinking filter: white noise in, about -3 dB/octave out.
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)


def write_speechlike_pcm(path: Path, lines: Sequence[Line], seconds: float, rate: int) -> None:
    """Raw float32 mono: pink noise at about -20 dBFS with a 4 Hz syllable envelope
    inside the transcript's windows, silence between them; written a minute at a time."""
    rng = np.random.default_rng(7)
    total = round(seconds * rate)
    gate = np.zeros(total + 1, dtype=np.int8)
    for x in lines:
        gate[round(x.start * rate)] += 1
        gate[min(total, round(x.end * rate))] -= 1
    inside = np.cumsum(gate[:total]) > 0
    state = scipy.signal.lfilter_zi(_PINK_B, _PINK_A) * 0.0
    chunk = 60 * rate
    with path.open("wb") as out:
        for first in range(0, total, chunk):
            n = min(chunk, total - first)
            pink, state = scipy.signal.lfilter(_PINK_B, _PINK_A, rng.standard_normal(n), zi=state)
            t = (first + np.arange(n)) / rate
            envelope = 0.35 + 0.65 * np.sin(np.pi * 4.0 * t) ** 2
            pcm = 0.3 * pink * envelope * inside[first : first + n]
            out.write(np.clip(pcm, -1.0, 1.0).astype("<f4").tobytes())


def encode_file(pcm: Path, rate: int, out: Path) -> None:
    """Raw float32 mono on disk to mp3, with the worker's encoder options."""
    args = assembly.encode_args(str(pcm), rate, MP3, RATE, out)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *args], check=True)


def run_floor(lines: Sequence[Line], seconds: float, workdir: Path) -> Span:
    pcm = workdir / "floor.f32"
    write_speechlike_pcm(pcm, lines, seconds, RATE)
    with timed() as span:
        encode_file(pcm, RATE, workdir / "floor.mp3")
    pcm.unlink()
    return span


# --- PEERS -----------------------------------------------------------------------------


def write_wav(path: Path, samples: npt.NDArray[np.float32], rate: int) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0), rate


@dataclass
class Peers:
    whole: Span = field(default_factory=Span)
    stretch: Span = field(default_factory=Span)
    ours_stretch: Span = field(default_factory=Span)
    # The same processes with ffmpeg's Rubber Band filter (pyVideoTrans's first choice),
    # the algorithm OUR stretch uses: what the processes cost beyond the algorithm.
    rubberband: Span = field(default_factory=Span)
    processes: int = 0
    capped: int = 0  # takes still longer than their window at the 1.3x cap


def stretch_with_processes(
    takes_dir: Path, jobs: Sequence[tuple[int, float]], tempo_filter: str
) -> Iterator[tuple[int, npt.NDArray[np.float32], int]]:
    """One ffmpeg process per take: ``{takes_dir}/{i}.wav`` sped up by `speed`, read back."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for i, speed in jobs:
        out = takes_dir / f"{i}.fast.wav"
        args = ["-hide_banner", "-loglevel", "error", "-y", "-i", str(takes_dir / f"{i}.wav")]
        args += ["-filter:a", f"{tempo_filter}={speed:.4f}", str(out)]
        subprocess.run([ffmpeg, *args], check=True)
        faster, rate = read_wav(out)
        yield i, faster, rate


async def run_peers(lines: Sequence[Line], seconds: float, workdir: Path) -> Peers:
    provider = providers.create("local")
    await provider.synthesize(SynthesisRequest(text="Bonjour.", language="fr"))
    takes_dir = workdir / "takes"
    takes_dir.mkdir()
    result = Peers()
    with timed() as whole:
        track = np.zeros(round(seconds * RATE), dtype=np.float32)
        placed: list[tuple[float, npt.NDArray[np.float32], int]] = []
        stretch_jobs: list[tuple[int, float]] = []
        for i, x in enumerate(lines):
            speech = await provider.synthesize(
                SynthesisRequest(text=x.text, language="fr", gender=Gender.FEMALE)
            )
            take, rate = speech.samples, speech.sample_rate
            bounds = dsp.speech_bounds(take, rate, PEER_SILENCE_DB)
            take = take[: bounds[1]] if bounds else take[:0]  # trim trailing silence
            write_wav(takes_dir / f"{i}.wav", take, rate)
            placed.append((x.start, take, rate))
            window = x.end - x.start
            if len(take) / rate > window:
                speed = min(len(take) / rate / window, PEER_MAX_SPEED)
                if speed == PEER_MAX_SPEED:
                    result.capped += 1
                stretch_jobs.append((i, speed))
        same_work = [(placed[i][1], placed[i][2], speed) for i, speed in stretch_jobs]
        with timed() as stretch:
            for i, faster, rate in stretch_with_processes(takes_dir, stretch_jobs, "atempo"):
                placed[i] = (placed[i][0], faster, rate)
        for start, take, rate in placed:
            pcm = assembly.resample(take, rate, RATE)
            first = round(start * RATE)
            pcm = pcm[: len(track) - first]
            track[first : first + len(pcm)] = pcm
        pcm_path = workdir / "peers.f32"
        await asyncio.to_thread(pcm_path.write_bytes, track.astype("<f4").tobytes())
        del track
        await asyncio.to_thread(encode_file, pcm_path, RATE, workdir / "peers.mp3")
    pcm_path.unlink()
    result.whole, result.stretch, result.processes = whole, stretch, len(stretch_jobs)
    with timed() as rubberband:
        for _ in stretch_with_processes(takes_dir, stretch_jobs, "rubberband=tempo"):
            pass
    result.rubberband = rubberband
    with timed() as ours_stretch:
        for take, rate, speed in same_work:
            dsp.stretch(take, rate, speed)
    result.ours_stretch = ours_stretch
    await provider.aclose()
    return result


# --- RSS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RssRun:
    minutes: float
    segments: int
    wall: float
    cpu: float
    python_peak: int  # VmHWM of the python child, exact
    ffmpeg_peak: int  # largest VmHWM of an ffmpeg it ran, sampled every 20 ms
    sampled_peak: int  # largest sampled resident set of python and its ffmpeg together
    # ru_maxrss from wait4 on the child. Not a measure of the child: a spawned process
    # starts from its parent's high-water mark (here the bench's, with PEERS' track).
    wait4_peak: int
    duration: float

    @property
    def peak(self) -> int:
        """Python's peak plus the largest ffmpeg's: an upper bound of the two together."""
        return self.python_peak + self.ffmpeg_peak


def child_rss(minutes: float, segments: int) -> None:
    """In the child: run OURS, print what the parent needs as one JSON line."""
    request = dub_request(generate(minutes, segments))
    sampler = TreeSampler()
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="bench-audio-rss-") as tmp:
        span, dubbed = asyncio.run(run_ours(request, Path(tmp)))
    sampler.stop()
    figures = {
        "wall": span.wall,
        "cpu": span.cpu,
        "python_peak": proc_status("self", "VmHWM"),
        "ffmpeg_peak": sampler.ffmpeg_peak,
        "sampled_peak": sampler.tree_peak,
        "duration": dubbed.duration,
    }
    print(CHILD_MARK + json.dumps(figures), flush=True)


def run_rss(minutes: float, segments: int) -> RssRun:
    args = [sys.executable, "-m", "bench.audio_bench", "--child-rss"]
    args += ["--minutes", str(minutes), "--segments", str(segments)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    # wait4, not wait: it returns the child's own rusage rather than every child's.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the RSS child failed (exit {proc.returncode}):\n{output}")
    figures = json.loads(lines[-1].removeprefix(CHILD_MARK))
    return RssRun(
        minutes=minutes,
        segments=segments,
        wall=figures["wall"],
        cpu=figures["cpu"],
        python_peak=figures["python_peak"],
        ffmpeg_peak=figures["ffmpeg_peak"],
        sampled_peak=figures["sampled_peak"],
        wait4_peak=usage.ru_maxrss * 1024,
        duration=figures["duration"],
    )


# --- the report ---------------------------------------------------------------------------


def verdict(goal: str, met: bool, numbers: str) -> str:
    return f"{'MET    ' if met else 'NOT MET'}  {goal}: {numbers}"


def row(name: str, span: Span, note: str = "") -> str:
    return f"  {name:<44} {span.wall:8.1f} {span.cpu:8.1f}  {note}"


async def bench(args: argparse.Namespace) -> None:
    lines = generate(args.minutes, args.segments, seed=args.seed)
    seconds = lines[-1].end
    request = dub_request(lines, request_id="bench-audio")
    label = f"{args.minutes:g} min, {args.segments} segments"
    print(f"transcript: {label} (bench.transcript_gen, seed {args.seed}), fr, local voice, mp3")
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        workdir = Path(tmp)
        print("OURS: dub_transcript ...", flush=True)
        ours, dubbed = await run_ours(request, workdir)
        size = dubbed.path.stat().st_size
        print(f"  {ours.wall:.1f} s; {dubbed.duration:.1f} s of mp3 ({mib(size)})")
        print("FLOOR: ffmpeg encoding the same length ...", flush=True)
        floor = run_floor(lines, seconds, workdir)
        print(f"  {floor.wall:.1f} s")
        print("PEERS: one ffmpeg process per over-long segment ...", flush=True)
        peers = await run_peers(lines, seconds, workdir)
        print(f"  {peers.whole.wall:.1f} s, of which stretching {peers.stretch.wall:.1f} s")
    rss: RssRun | None = None
    if not args.skip_rss:
        print(f"RSS: OURS on {args.rss_minutes:g} min, {args.rss_segments} segments ...")
        rss = run_rss(args.rss_minutes, args.rss_segments)
        print(f"  {rss.wall:.1f} s")

    print()
    print(f"figures ({label}; 2 cores; seconds)      wall      CPU  (CPU: process + children)")
    print(row("OURS  whole assembly", ours, f"{seconds / ours.wall:.0f}x real time"))
    print(row("FLOOR ffmpeg mp3 encode alone", floor))
    print(row("PEERS whole pipeline", peers.whole, f"{len(lines)} takes, 1.3x cap"))
    print(row(f"PEERS stretch step ({peers.processes} ffmpeg processes)", peers.stretch))
    print(row("OURS  stretch step (same takes, in-process)", peers.ours_stretch))
    print(row("PEERS stretch step, ffmpeg rubberband filter", peers.rubberband, "(info)"))
    if rss is not None:
        note = (
            f"python peak {mib(rss.python_peak)}, ffmpeg peak {mib(rss.ffmpeg_peak)}, "
            f"together (sampled) {mib(rss.sampled_peak)}; "
            f"[wait4 {mib(rss.wait4_peak)}: inherits the bench's own peak]"
        )
        print(
            row(
                f"RSS   OURS, {rss.minutes:g} min, {rss.segments} segments",
                Span(rss.wall, rss.cpu),
                note,
            )
        )
    print()
    print("timing report (OURS):")
    for line in timing_lines(dubbed.timing):
        print(f"  {line}")
    print(f"  measured loudness {dubbed.loudness:.1f} LUFS")
    print(f"  peers: {peers.capped} of {peers.processes} sped-up takes still too long at 1.3x")
    print()
    ratio = ours.wall / floor.wall
    whole = peers.whole.wall / ours.wall
    stretch = peers.stretch.wall / max(peers.ours_stretch.wall, 1e-9)
    print(
        "  stretch step with ffmpeg's rubberband filter (our algorithm) in processes: "
        f"{peers.rubberband.wall / max(peers.ours_stretch.wall, 1e-9):.1f}x ours"
    )
    print()
    print("goals (wall time):")
    print(verdict("total <= 2x the encode-alone floor", ratio <= 2, f"{ratio:.2f}x"))
    print(
        verdict(
            ">= 10x faster than per-segment processes, WHOLE PIPELINE",
            whole >= 10,
            f"peers {peers.whole.wall:.1f} s / ours {ours.wall:.1f} s = {whole:.2f}x",
        )
    )
    print(
        verdict(
            ">= 10x faster than per-segment processes, STRETCH STEP",
            stretch >= 10,
            f"peers {peers.stretch.wall:.2f} s / ours {peers.ours_stretch.wall:.2f} s "
            f"= {stretch:.1f}x",
        )
    )
    if rss is None:
        print("SKIPPED  peak RSS < 1 GiB for a 3-hour programme (--skip-rss)")
    else:
        print(
            verdict(
                f"peak RSS < 1 GiB for {rss.minutes:g} min",
                rss.peak < GIB,
                f"python {mib(rss.python_peak)} + ffmpeg {mib(rss.ffmpeg_peak)} = {mib(rss.peak)}",
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=90.0)
    parser.add_argument("--segments", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-minutes", type=float, default=180.0)
    parser.add_argument("--rss-segments", type=int, default=3000)
    parser.add_argument("--skip-rss", action="store_true", help="skip the 3-hour RSS run")
    parser.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.minutes, args.segments)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
