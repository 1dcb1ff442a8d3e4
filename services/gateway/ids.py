"""Job ids: time-ordered, unique, and safe inside NATS subjects and KV keys."""

from __future__ import annotations

import base64
import secrets
import time


def new_job_id() -> str:
    """26 lowercase base32 characters: 48 bits of milliseconds, then 80 random bits.

    Sorting ids sorts jobs by creation time (to the millisecond), which keeps
    database index inserts append-mostly.
    """
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(10)
    return base64.b32encode(raw).decode().rstrip("=").lower()
