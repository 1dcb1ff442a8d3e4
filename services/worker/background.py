"""Fetch a job's background track (a URL or an uploaded asset) and decode it to PCM.

Everything goes file to file, in chunks: a two-hour stem never sits in memory.

BackgroundError
├── BackgroundUnavailable   retry later: the network, the server's 5xx/429, NATS
└── BackgroundRejected      fail the job: 4xx, too large, missing asset, not audio
"""

from __future__ import annotations

from pathlib import Path

import httpx
import nats.errors
import nats.js.errors
from nats.js.object_store import ObjectStore

from dubbing import bus, limits
from dubbing.errors import Reason
from dubbing.v1 import dubbing_pb2 as pb
from worker.assembly import EncodeError, decode_to_file
from worker.mixdown import PcmFile

MAX_BACKGROUND_BYTES = limits.MAX_MEDIA_BYTES
# Longest background kept, as the longest transcript: the rest is cut.
MAX_BACKGROUND_SECONDS = limits.MAX_PROGRAMME_SECONDS
_HTTP_TIMEOUT = httpx.Timeout(30.0, read=60.0)
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class BackgroundError(Exception):
    """Base of every background failure; `reason` ends up in the failed job's ErrorInfo."""

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class BackgroundUnavailable(BackgroundError):
    """Could not be fetched now; worth retrying."""


class BackgroundRejected(BackgroundError):
    """Retrying cannot help: the source does not exist, is too large or is not audio."""


def _check_url(url: str) -> None:
    """Refuse what no retry can fetch. The gateway checks URLs too; this guards
    against a job from an older gateway, and a port out of range would otherwise
    surface as an OverflowError from deep inside the socket layer."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BackgroundRejected(
            f"{url!r} is not a valid URL", reason=Reason.BACKGROUND_FETCH_FAILED
        ) from exc
    port = parsed.port
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.host
        or not (port is None or 0 < port < 65536)
    ):
        raise BackgroundRejected(
            f"{url!r} is not an http:// or https:// URL with a host",
            reason=Reason.BACKGROUND_FETCH_FAILED,
        )


class BackgroundFetcher:
    """Gets background sources onto local disk. One per worker process."""

    def __init__(
        self,
        assets: ObjectStore | None,
        *,
        http: httpx.AsyncClient | None = None,
        max_bytes: int = MAX_BACKGROUND_BYTES,
    ) -> None:
        self._assets = assets
        self._http = http
        self._max_bytes = max_bytes

    async def fetch(self, source: pb.BackgroundAudio, dest: Path) -> None:
        which = source.WhichOneof("source")
        if which == "url":
            await self._fetch_url(source.url, dest)
        elif which == "asset":
            await self._fetch_asset(source.asset, dest)
        else:
            raise BackgroundRejected(
                "background has no url or asset", reason=Reason.BACKGROUND_INVALID
            )

    async def prepare(
        self, source: pb.BackgroundAudio, workdir: Path, sample_rate: int, *, channels: int = 1
    ) -> PcmFile:
        """Fetch `source` and decode it to float32 at `sample_rate` in `workdir`, with
        `channels` channels (ffmpeg down- or upmixes)."""
        fetched = workdir / "background.src"
        await self.fetch(source, fetched)
        pcm_path = workdir / "background.f32"
        try:
            frames = await decode_to_file(fetched, pcm_path, sample_rate, channels=channels)
        except EncodeError as exc:
            raise BackgroundRejected(
                f"background is not audio ffmpeg can read: {exc.stderr or exc}",
                reason=Reason.BACKGROUND_UNREADABLE,
            ) from exc
        finally:
            fetched.unlink(missing_ok=True)
        if frames == 0:
            raise BackgroundRejected("background has no audio", reason=Reason.BACKGROUND_UNREADABLE)
        if frames > MAX_BACKGROUND_SECONDS * sample_rate:
            with pcm_path.open("r+b") as f:
                f.truncate(4 * channels * MAX_BACKGROUND_SECONDS * sample_rate)
        return PcmFile(pcm_path, sample_rate, create=False, channels=channels)

    async def _fetch_url(self, url: str, dest: Path) -> None:
        _check_url(url)
        client = self._http or httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=True)
        try:
            async with client.stream("GET", url) as response:
                status = response.status_code
                if status in _RETRYABLE_STATUS:
                    raise BackgroundUnavailable(
                        f"background URL answered HTTP {status}",
                        reason=Reason.BACKGROUND_UNAVAILABLE,
                    )
                if status >= 400:
                    raise BackgroundRejected(
                        f"background URL answered HTTP {status}",
                        reason=Reason.BACKGROUND_FETCH_FAILED,
                    )
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                    raise self._too_large()
                size = 0
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise self._too_large()
                        out.write(chunk)
        except (
            httpx.InvalidURL,
            httpx.UnsupportedProtocol,
            httpx.TooManyRedirects,
        ) as exc:
            raise BackgroundRejected(
                f"cannot fetch the background URL: {exc}", reason=Reason.BACKGROUND_FETCH_FAILED
            ) from exc
        except httpx.TransportError as exc:
            raise BackgroundUnavailable(
                f"could not fetch the background URL: {exc!r}", reason=Reason.BACKGROUND_UNAVAILABLE
            ) from exc
        finally:
            if self._http is None:
                await client.aclose()

    def _too_large(self) -> BackgroundRejected:
        return BackgroundRejected(
            f"background is larger than {self._max_bytes} bytes", reason=Reason.BACKGROUND_TOO_LARGE
        )

    async def _fetch_asset(self, name: str, dest: Path) -> None:
        if self._assets is None:
            raise BackgroundUnavailable(
                "this worker has no access to uploaded assets", reason=Reason.BACKGROUND_UNAVAILABLE
            )
        object_name = bus.asset_object_id(name)
        try:
            with dest.open("wb") as out:
                await self._assets.get(object_name, writeinto=out)  # type: ignore[arg-type]
        except nats.js.errors.ObjectNotFoundError as exc:
            raise BackgroundRejected(
                f"asset {name} does not exist (expired or never uploaded)",
                reason=Reason.ASSET_NOT_FOUND,
            ) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BackgroundUnavailable(
                f"could not read asset {name}: {exc!r}", reason=Reason.BACKGROUND_UNAVAILABLE
            ) from exc
