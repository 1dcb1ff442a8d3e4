"""``dubbing-gateway`` / ``python -m gateway``: run the gRPC gateway."""

from __future__ import annotations

import asyncio

from dubbing import logging as dlogging
from dubbing.process import serve
from dubbing.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    dlogging.configure(service="gateway", fmt=settings.log_format, level=settings.log_level)
    from gateway.app import run_gateway

    async def run(stop: asyncio.Event) -> None:
        await run_gateway(settings, stop)

    serve(run)


if __name__ == "__main__":
    main()
