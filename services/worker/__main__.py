"""``dubbing-worker`` / ``python -m worker``: run one worker process."""

from __future__ import annotations

import asyncio

from dubbing import logging as dlogging
from dubbing.process import serve
from dubbing.settings import WorkerSettings


def main() -> None:
    settings = WorkerSettings()
    dlogging.configure(service="worker", fmt=settings.log_format, level=settings.log_level)
    from worker.runner import Worker

    async def run(stop: asyncio.Event) -> None:
        await Worker(settings).run(stop)

    serve(run)


if __name__ == "__main__":
    main()
