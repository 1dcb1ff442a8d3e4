"""Upstream voices. ``create(name)`` builds one by the name clients use in requests."""

from __future__ import annotations

from worker.providers.base import (
    Capabilities,
    Gender,
    Language,
    Provider,
    Speech,
    SynthesisRequest,
)
from worker.providers.errors import (
    PermanentProviderError,
    ProviderAccountError,
    ProviderError,
    TransientProviderError,
    UnsupportedError,
)

__all__ = [
    "Capabilities",
    "Gender",
    "Language",
    "PermanentProviderError",
    "Provider",
    "ProviderAccountError",
    "ProviderError",
    "Speech",
    "SynthesisRequest",
    "TransientProviderError",
    "UnsupportedError",
    "create",
]


def create(name: str) -> Provider:
    if name == "local":
        from worker.providers.local import LocalProvider

        return LocalProvider()
    raise ValueError(f"unknown provider {name!r}; this worker can run: local")
