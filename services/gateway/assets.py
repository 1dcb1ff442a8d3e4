"""Uploaded assets (``UploadAsset``, ``BackgroundAudio.asset``) in the NATS Object Store.

An upload is spooled to a temporary file as it arrives (never held in memory),
checked against the limits and the caller's SHA-256, and only then put into the
assets bucket under a new id. The public name of an asset is ``assets/<id>``; the
object in :data:`dubbing.bus.ASSETS_BUCKET` is named ``<id>`` and keeps the file's
name as its description.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import nats.errors
from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from dubbing import bus
from dubbing.errors import Reason
from dubbing.jetstream import BusUnavailable
from dubbing.jobstate import timestamp
from dubbing.v1 import dubbing_pb2 as pb

__all__ = [
    "MAX_CHUNK_BYTES",
    "MAX_FILENAME_LENGTH",
    "AssetStore",
    "Received",
    "UploadRejected",
    "receive",
]

MAX_CHUNK_BYTES = 1024 * 1024
MAX_FILENAME_LENGTH = 255
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


class UploadRejected(Exception):
    """An upload the gateway refuses: INVALID_ARGUMENT with `reason` on `field`."""

    def __init__(
        self,
        reason: Reason,
        field: str,
        description: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{field}: {description}")
        self.reason = reason
        self.field = field
        self.description = description
        self.metadata = dict(metadata or {})


@dataclass(frozen=True, slots=True)
class Received:
    """What an upload carried, once it is all in the spool file."""

    filename: str
    size: int
    sha256: str


@dataclass(slots=True)
class _Progress:
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0


def _header(first: pb.UploadAssetRequest) -> tuple[str, str]:
    """The first message's filename and (lowercase) expected SHA-256, checked."""
    filename = first.filename
    if len(filename) > MAX_FILENAME_LENGTH:
        raise UploadRejected(
            Reason.INVALID_ARGUMENT,
            "filename",
            f"must be at most {MAX_FILENAME_LENGTH} characters",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise UploadRejected(
            Reason.INVALID_ARGUMENT, "filename", "must not contain control characters"
        )
    expected = first.sha256
    if expected and not _SHA256_HEX.fullmatch(expected):
        raise UploadRejected(
            Reason.INVALID_ARGUMENT,
            "sha256",
            "must be the hex SHA-256 of the file: 64 hexadecimal digits",
        )
    return filename, expected.lower()


def _absorb(spool: BinaryIO, progress: _Progress, chunk: bytes) -> None:
    # In a thread: hashlib releases the GIL for large buffers, and a slow disk
    # must not stall the event loop.
    progress.digest.update(chunk)
    spool.write(chunk)


async def receive(
    requests: AsyncIterable[pb.UploadAssetRequest], spool: BinaryIO, *, max_bytes: int
) -> Received:
    """Write the upload's chunks to `spool`, checking each rule as the bytes arrive.

    Raises :class:`UploadRejected` at the first broken rule, without reading the
    rest: a chunk over :data:`MAX_CHUNK_BYTES`, more than `max_bytes` in all, no
    bytes at all, metadata after the first message, or content that does not match
    the SHA-256 given.
    """
    progress = _Progress()
    header: tuple[str, str] | None = None
    async for message in requests:
        if header is None:
            header = _header(message)
        else:
            for name in ("filename", "sha256"):
                if getattr(message, name):
                    raise UploadRejected(
                        Reason.INVALID_ARGUMENT, name, "is only allowed in the first message"
                    )
        chunk = message.chunk
        if len(chunk) > MAX_CHUNK_BYTES:
            raise UploadRejected(
                Reason.INVALID_ARGUMENT,
                "chunk",
                f"is {len(chunk)} bytes; at most {MAX_CHUNK_BYTES} bytes per message",
            )
        progress.size += len(chunk)
        if progress.size > max_bytes:
            raise UploadRejected(
                Reason.ASSET_TOO_LARGE,
                "chunk",
                f"the file is larger than the {max_bytes} bytes an asset may have",
                metadata={"max_bytes": str(max_bytes)},
            )
        if chunk:
            await asyncio.to_thread(_absorb, spool, progress, chunk)
    if progress.size == 0:
        raise UploadRejected(Reason.INVALID_ARGUMENT, "chunk", "the upload carried no bytes")
    assert header is not None
    filename, expected = header
    actual = progress.digest.hexdigest()
    if expected and expected != actual:
        raise UploadRejected(
            Reason.CHECKSUM_MISMATCH,
            "sha256",
            f"does not match the content received (SHA-256 {actual})",
            metadata={"expected": expected, "actual": actual},
        )
    await asyncio.to_thread(spool.flush)
    return Received(filename=filename, size=progress.size, sha256=actual)


class AssetStore:
    """The assets bucket as the gateway uses it. NATS trouble is :class:`BusUnavailable`."""

    def __init__(self, store: ObjectStore, *, max_age_seconds: float, max_bytes: int) -> None:
        self._store = store
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes

    async def put(self, spool: BinaryIO, received: Received) -> pb.Asset:
        """Store the spooled upload under a new id and describe it."""
        object_id = uuid.uuid4().hex  # the form validation.ASSET_NAME accepts
        # Before the first chunk is stored: the bucket's max age counts from each
        # message, so the content is certain to last until this plus the max age.
        created = time.time()
        await asyncio.to_thread(spool.seek, 0)
        try:
            info = await self._store.put(
                object_id,
                spool,  # type: ignore[arg-type]  # read with readinto() in an executor
                meta=ObjectMeta(name=object_id, description=received.filename),
            )
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot store the asset: {exc!r}") from exc
        if info.size != received.size:
            raise RuntimeError(
                f"stored {info.size} bytes of asset {object_id}, received {received.size}"
            )
        return pb.Asset(
            name=bus.asset_name(object_id),
            filename=received.filename,
            size_bytes=received.size,
            sha256=received.sha256,
            create_time=timestamp(created),
            expire_time=timestamp(created + self.max_age_seconds),
        )

    async def exists(self, asset: str) -> bool:
        """Whether the asset named ``assets/<id>`` is stored (and not deleted)."""
        try:
            await self._store.get_info(bus.asset_object_id(asset))
        except NotFoundError:  # ObjectNotFoundError is one
            return False
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot look up asset {asset!r}: {exc!r}") from exc
        return True
