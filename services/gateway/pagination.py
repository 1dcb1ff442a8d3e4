"""AIP-158 pagination for ListJobs: page sizes and opaque, tamper-evident page tokens.

A page holds at most ``page_size`` items and, as AIP-158 allows, fewer when more would
make the response large: :func:`fill_page` stops at :data:`MAX_PAGE_BYTES` of serialized
items (always serving one), so that every page fits in the 4 MiB a default gRPC client
receives. A short page does not mean the last one; an empty next_page_token does.

A page token carries the cursor of the last job on a page, ``(sort key, job id)``,
bound to the request's filter. It is encrypted and authenticated with keys derived
from one server secret, so that callers can neither read nor forge it, and a token
presented with a different filter (or a different secret) is refused, as AIP-158
requires. All gateway replicas must share the secret, or a page fetched from one
replica cannot be continued on another.

The construction uses only the standard library, as a deterministic authenticated
encryption in the SIV style: ``tag = HMAC-SHA256(mac_key, filter || cursor)[:16]``
serves both as the authentication tag and as the IV of a keystream
``HMAC-SHA256(enc_key, tag || counter)`` XORed with the cursor. The token is
``urlsafe_base64(version || tag || ciphertext)`` without padding, about 70
characters for a UUID job id. The same cursor and filter always give the same
token, which reveals nothing but that equality.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from dubbing.errors import Reason

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "InvalidPageRequest",
    "PageTokenCodec",
    "fill_page",
    "page_size",
    "states_filter_key",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Serialized items a page holds at most, unless its first item alone is larger: well
# under the 4 MiB a default client receives, with room for one item of up to ~3.6 MB
# (the largest job: validation.Limits.max_request_bytes plus a timing report).
MAX_PAGE_BYTES = 3 * 1024 * 1024
# Per item in the response: its field tag and length prefix.
_ITEM_FRAMING_BYTES = 6

M = TypeVar("M", bound=Message)

# Longest token accepted; real ones are far shorter (the job id is capped below).
MAX_TOKEN_LENGTH = 512
MAX_CURSOR_ID_BYTES = 255
MIN_SECRET_BYTES = 16

_VERSION = 1
_TAG_BYTES = 16
_INT64 = struct.Struct(">q")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


class InvalidPageRequest(ValueError):
    """A ListJobs page_size or page_token the caller must fix (INVALID_ARGUMENT)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    @property
    def reason(self) -> Reason:
        """The ErrorInfo reason to report."""
        return Reason.INVALID_PAGE_TOKEN if self.field == "page_token" else Reason.INVALID_ARGUMENT

    @property
    def violations(self) -> list[tuple[str, str]]:
        """The BadRequest field violation to report."""
        return [(self.field, self.description)]


def page_size(requested: int) -> int:
    """The page size to serve: 0 means the default, values over the maximum are capped."""
    if requested < 0:
        raise InvalidPageRequest("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def fill_page(items: Sequence[M], size: int, *, max_bytes: int = MAX_PAGE_BYTES) -> list[M]:
    """The first `items` to serve on a page: at most `size`, and no more than `max_bytes`
    of them serialized, but always the first one."""
    page: list[M] = []
    used = 0
    for item in items[:size]:
        used += item.ByteSize() + _ITEM_FRAMING_BYTES
        if page and used > max_bytes:
            break
        page.append(item)
    return page


def states_filter_key(states: Iterable[int]) -> str:
    """Canonical filter key of a ListJobs ``states`` filter: order and repeats do not count."""
    return "states=" + ",".join(str(s) for s in sorted(set(states)))


class PageTokenCodec:
    """Encodes ``(sort key, job id)`` cursors into page tokens and back."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the page token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._enc_key = hmac.digest(secret, b"dubbing.v1 page token encryption", "sha256")
        self._mac_key = hmac.digest(secret, b"dubbing.v1 page token authentication", "sha256")

    def encode(self, cursor: tuple[int, str], filter_key: str) -> str:
        """A token for the page after `cursor`, valid only with the same `filter_key`."""
        sort_key, job_id = cursor
        id_bytes = job_id.encode()
        if len(id_bytes) > MAX_CURSOR_ID_BYTES:
            raise ValueError(f"cursor id is longer than {MAX_CURSOR_ID_BYTES} bytes")
        if not -(2**63) <= sort_key < 2**63:
            raise ValueError("cursor sort key does not fit in a signed 64-bit integer")
        plain = _INT64.pack(sort_key) + id_bytes
        tag = self._tag(plain, filter_key)
        raw = bytes([_VERSION]) + tag + _xor(plain, self._keystream(tag, len(plain)))
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, token: str, filter_key: str) -> tuple[int, str]:
        """The cursor in `token`; InvalidPageRequest if it is malformed, forged or for another
        filter."""
        raw = _unbase64(token)
        if raw is None or len(raw) < 1 + _TAG_BYTES + _INT64.size:
            raise _invalid("is malformed; pass the next_page_token of a previous response")
        if raw[0] != _VERSION:
            raise _invalid("was issued by an incompatible server version; start from page one")
        tag = raw[1 : 1 + _TAG_BYTES]
        sealed = raw[1 + _TAG_BYTES :]
        plain = _xor(sealed, self._keystream(tag, len(sealed)))
        if not hmac.compare_digest(tag, self._tag(plain, filter_key)):
            raise _invalid(
                "is not valid for this request: it was altered, or issued for different "
                "filters; keep the filters of the first page or start without a page_token"
            )
        (sort_key,) = _INT64.unpack_from(plain)
        try:
            job_id = plain[_INT64.size :].decode()
        except UnicodeDecodeError:  # authentic, so only a bug in encode() could get here
            raise _invalid("is malformed") from None
        return sort_key, job_id

    def _tag(self, plain: bytes, filter_key: str) -> bytes:
        filter_bytes = filter_key.encode()
        message = bytes([_VERSION]) + struct.pack(">I", len(filter_bytes)) + filter_bytes + plain
        return hmac.digest(self._mac_key, message, "sha256")[:_TAG_BYTES]

    def _keystream(self, tag: bytes, length: int) -> bytes:
        blocks = (length + hashlib.sha256().digest_size - 1) // hashlib.sha256().digest_size
        stream = b"".join(
            hmac.digest(self._enc_key, tag + struct.pack(">I", i), "sha256") for i in range(blocks)
        )
        return stream[:length]


def _invalid(description: str) -> InvalidPageRequest:
    return InvalidPageRequest("page_token", description)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _unbase64(token: str) -> bytes | None:
    """Bytes of an unpadded urlsafe base64 string, or None unless it is canonical."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not _TOKEN_CHARS.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # Several strings can decode to the same bytes (unused low bits of the last
    # character); accept only the one encode() produces.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None
    return raw
