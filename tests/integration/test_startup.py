"""A service that cannot reach its dependencies says so clearly and exits."""

from __future__ import annotations

from pathlib import Path

from dubbing.devstack import NATS_READY, ManagedProcess, NatsServer, free_port
from dubbing.devstack import gateway as gateway_process
from dubbing.devstack import worker as worker_process


def exit_output(proc: ManagedProcess) -> tuple[int, str]:
    proc.start()
    code = proc.wait(timeout=60)
    return code, "\n".join(proc.lines)


def closed_nats_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"  # nothing listens there


def test_gateway_without_nats_fails_fast(tmp_path: Path) -> None:
    url = closed_nats_url()
    proc = gateway_process(
        {
            "DUBBING_NATS_URL": url,
            "DUBBING_CONNECT_TIMEOUT_SECONDS": "1",
            "DUBBING_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
            "DUBBING_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )
    code, output = exit_output(proc)
    assert code == 2
    assert f"cannot reach NATS at {url}" in output
    assert "Traceback" not in output


def test_worker_without_nats_fails_fast() -> None:
    url = closed_nats_url()
    proc = worker_process({"DUBBING_NATS_URL": url, "DUBBING_CONNECT_TIMEOUT_SECONDS": "1"})
    code, output = exit_output(proc)
    assert code == 2
    assert f"cannot reach NATS at {url}" in output
    assert "Traceback" not in output


def test_gateway_without_database_fails_fast(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start().wait_for(NATS_READY)
    try:
        proc = gateway_process(
            {
                "DUBBING_NATS_URL": server.url,
                "DUBBING_CONNECT_TIMEOUT_SECONDS": "1",
                "DUBBING_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nope",
                "DUBBING_LISTEN": f"127.0.0.1:{free_port()}",
            }
        )
        code, output = exit_output(proc)
    finally:
        server.stop()
    assert code == 2
    assert "127.0.0.1:1" in output
    assert "Traceback" not in output
