"""Uploaded assets and background audio: the pieces :class:`DubbingClient` and the CLI share."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from dubbing import bus
from dubbing.v1 import dubbing_pb2 as pb

# Bytes per UploadAsset message (the gateway accepts up to 1 MiB).
UPLOAD_CHUNK_BYTES = 256 * 1024

AssetSource = bytes | str | os.PathLike[str]


def is_url(source: str) -> bool:
    """Whether ``source`` is an http or https URL (as BackgroundAudio.url takes it)."""
    return source.lower().startswith(("http://", "https://"))


def is_asset_name(source: str) -> bool:
    """Whether ``source`` is an asset name, ``assets/...``, as UploadAsset returns it."""
    return source.startswith(bus.ASSET_NAME_PREFIX)


def background_audio(
    source: str, *, gain_db: float = 0.0, ducking_db: float | None = None
) -> pb.BackgroundAudio:
    """A BackgroundAudio from an http(s) URL or an asset name (``assets/...``).

    ``ducking_db`` None leaves the field unset: the service default (12 dB).
    Raises ValueError for anything else; upload a local file with
    :meth:`DubbingClient.upload_asset` and pass the returned ``Asset.name``.
    """
    if is_url(source):
        background = pb.BackgroundAudio(url=source, gain_db=gain_db)
    elif is_asset_name(source):
        background = pb.BackgroundAudio(asset=source, gain_db=gain_db)
    else:
        raise ValueError(
            f"{source!r} is neither an http(s) URL nor an asset name (assets/...); "
            "upload a local file with upload_asset first"
        )
    if ducking_db is not None:
        background.ducking_db = ducking_db
    return background


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def sha256_of(source: AssetSource) -> str:
    """Hex SHA-256 of the bytes, or of the file read in a first pass (in a thread)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return await asyncio.to_thread(_file_sha256, Path(source))


async def _chunks(source: AssetSource) -> AsyncIterator[bytes]:
    if isinstance(source, bytes):
        for offset in range(0, len(source), UPLOAD_CHUNK_BYTES):
            yield source[offset : offset + UPLOAD_CHUNK_BYTES]
        return
    handle = await asyncio.to_thread(Path(source).open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


async def upload_messages(
    source: AssetSource, *, filename: str, sha256: str
) -> AsyncIterator[pb.UploadAssetRequest]:
    """The UploadAsset stream: the metadata with the first chunk, then one chunk each."""
    first = True
    async for chunk in _chunks(source):
        if first:
            yield pb.UploadAssetRequest(filename=filename, sha256=sha256, chunk=chunk)
            first = False
        else:
            yield pb.UploadAssetRequest(chunk=chunk)
    if first:  # nothing to send: the gateway says the upload is empty
        yield pb.UploadAssetRequest(filename=filename, sha256=sha256)
