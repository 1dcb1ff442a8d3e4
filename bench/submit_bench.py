"""SubmitDub throughput and latency against the default (SQLite) stack, next to a
bare grpc.aio echo server driven by the same client: ``make bench-submit``.

The gateway runs as its own process with a real nats-server and SQLite file
(synchronous=FULL, so every answered submit is on disk). No worker runs, so
the jobs' processing does not compete for the two cores; the benchmark itself
advertises the local provider in the workers KV bucket, as a worker would, so
admission works as in production. The echo server answers SubmitDub with a
Job built from the request and nothing else: the ceiling for a Python gRPC
service on this machine.

After the run the benchmark checks durability: every accepted job is in the
database and was published to the work queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dubbing import bus, jetstream
from dubbing.devstack import NATS_READY, ManagedProcess, NatsServer, free_port
from dubbing.devstack import gateway as gateway_process
from dubbing.process import run
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.helpers import transcript_request

ECHO_READY = "echo_ready"


class EchoServicer(pb_grpc.DubbingServiceServicer):
    async def SubmitDub(
        self,
        request: pb.SubmitDubRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.SubmitDubResponse:
        return pb.SubmitDubResponse(job=pb.Job(id="echo", request=request.request), created=True)


async def serve_echo(port: int) -> None:
    server = grpc.aio.server()
    # Only SubmitDub is served; the generated base marks every RPC abstract.
    pb_grpc.add_DubbingServiceServicer_to_server(EchoServicer(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(ECHO_READY, flush=True)
    await server.wait_for_termination()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    ok: int
    failed: int
    seconds: float
    latencies: list[float]
    server_cpu: float = 0.0

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<8} {self.ok:>6} ok {self.failed:>4} failed  "
            f"{self.throughput:8.0f} req/s  p50 {self.percentile(50):6.1f} ms  "
            f"p99 {self.percentile(99):6.1f} ms  "
            f"server CPU {self.server_cpu / max(1, self.ok) * 1e6:5.0f} us/req"
        )


async def drive(
    name: str, target: str, total: int, concurrency: int, pid: int, round_: int
) -> Result:
    latencies: list[float] = []
    failed = 0
    counter = iter(range(total))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        # Warm up the connection and both servers' code paths.
        for i in range(50):
            await stub.SubmitDub(
                pb.SubmitDubRequest(
                    request=transcript_request(request_id=f"warm-{name}-{round_}-{i}")
                )
            )

        async def client(cid: int) -> None:
            nonlocal failed
            for i in counter:
                request = pb.SubmitDubRequest(
                    request=transcript_request(request_id=f"{name}-{round_}-{cid}-{i}")
                )
                t0 = time.perf_counter()
                try:
                    await stub.SubmitDub(request)
                except grpc.aio.AioRpcError as exc:
                    failed += 1
                    if failed <= 3:
                        print(f"  {name}: {exc.code().name}: {exc.details()}", file=sys.stderr)
                    continue
                latencies.append(time.perf_counter() - t0)

        cpu0 = cpu_seconds(pid)
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu0
    return Result(name, len(latencies), failed, seconds, latencies, cpu)


async def wait_serving(target: str, deadline_seconds: float = 60.0) -> None:
    """Until the gateway's health service answers SERVING (wait_for_ready blocks
    until the server listens; no polling)."""
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=deadline_seconds
        )
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"gateway at {target} is {answer.status}")


async def advertise_local(nats_url: str, stop: asyncio.Event) -> None:
    """Stand in for a worker's advert so admission accepts provider 'local'."""
    nc = await nats.connect(nats_url)
    kv = await jetstream.workers_kv(nc.jetstream())
    advert = bus.WorkerAdvert(
        worker_id="bench",
        provider="local",
        transcript_dubbing=True,
        media_dubbing=False,
        languages=[bus.LanguageAdvert("fr", "French", ["female", "male"])],
        min_speed=0.5,
        max_speed=2.0,
        concurrency=1,
        time=time.time(),
    )
    while not stop.is_set():
        await kv.put(advert.key, advert.encode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
    await nc.close()


async def bench(total: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        data = Path(tmp)
        nats_server = NatsServer(data / "nats", log_file=data / "nats.log")
        nats_server.start().wait_for(NATS_READY)
        nc = await nats.connect(nats_server.url)
        await jetstream.ensure_topology(nc.jetstream())
        await nc.close()
        stop = asyncio.Event()
        advert = asyncio.create_task(advertise_local(nats_server.url, stop))
        db = data / "gateway.db"
        listen = f"127.0.0.1:{free_port()}"
        gw = gateway_process(
            {
                "DUBBING_NATS_URL": nats_server.url,
                "DUBBING_DATABASE_URL": f"sqlite:///{db}",
                "DUBBING_LISTEN": listen,
                "DUBBING_LOG_LEVEL": "info",
                "DUBBING_LOG_FORMAT": "json",
            },
            log_file=data / "gateway.log",
            capture=False,
        )
        echo_port = free_port()
        echo = ManagedProcess(
            "echo", [sys.executable, "-m", "bench.submit_bench", "--serve-echo", str(echo_port)]
        )
        try:
            gw.start()
            await wait_serving(listen)
            echo.start().wait_for(ECHO_READY)
            print(
                f"SubmitDub at concurrency {concurrency}, {rounds} alternating rounds of "
                f"{total} requests per server (2-core machine)"
            )
            echo_runs: list[Result] = []
            gw_runs: list[Result] = []
            for r in range(rounds):
                # Alternate, so that machine noise hits both servers alike.
                echo_runs.append(
                    await drive("echo", f"127.0.0.1:{echo_port}", total, concurrency, echo.pid, r)
                )
                print(echo_runs[-1].line())
                gw_runs.append(await drive("gateway", listen, total, concurrency, gw.pid, r))
                print(gw_runs[-1].line())
            echo_median = statistics.median(x.throughput for x in echo_runs)
            gw_median = statistics.median(x.throughput for x in gw_runs)
            print(
                f"median throughput: echo {echo_median:.0f} req/s, gateway {gw_median:.0f} req/s"
                f" -> gateway / echo = {gw_median / echo_median:.0%} (goal >= 40%)"
            )
            accepted = sum(x.ok for x in gw_runs) + 50 * rounds
            await verify_durable(db, nats_server.url, accepted)
        finally:
            stop.set()
            await advert
            echo.stop()
            gw.stop()
            nats_server.stop()
            print_writer_stats(data / "gateway.log")


def print_writer_stats(log_file: Path) -> None:
    """The gateway logs its store's write counters when it stops."""
    for line in reversed(log_file.read_text().splitlines()):
        if '"gateway_stopped"' in line:
            stats = json.loads(line)
            ops, txs = stats["store_operations"], stats["store_transactions"]
            per_fsync = ops / max(1, txs)
            print(f"group commit: {ops} writes in {txs} transactions ({per_fsync:.1f} per fsync)")
            return


async def verify_durable(db: Path, nats_url: str, accepted: int) -> None:
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    deadline = time.monotonic() + 60
    while True:
        info = await js.stream_info(bus.JOBS_STREAM)
        if info.state.messages >= accepted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)  # the relay drains the outbox in the background
    await nc.close()
    print(
        f"durability: {accepted} accepted, {stored} in the database, "
        f"{info.state.messages} on the work queue"
    )
    if stored != accepted or info.state.messages != accepted:
        raise SystemExit("FAIL: accepted jobs are missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8_000, help="per server per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        run(serve_echo(args.serve_echo))  # the same event loop as the gateway
    else:
        asyncio.run(bench(args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
