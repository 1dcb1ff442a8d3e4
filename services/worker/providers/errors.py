"""Errors a provider raises. The worker decides retry versus failure from the type alone.

ProviderError
├── TransientProviderError   retry later (nak with delay): timeouts, 429, 5xx
└── PermanentProviderError   fail the job (term): bad input, auth, quota
    └── UnsupportedError     a language/voice/option this provider cannot do
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider failure.

    `reason` is an UPPER_SNAKE code that ends up in the failed job's ErrorInfo.
    """

    def __init__(self, message: str, *, reason: str, provider: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.provider = provider


class TransientProviderError(ProviderError):
    """Worth retrying; `retry_after` (seconds) when the provider said how long to wait."""

    def __init__(
        self, message: str, *, reason: str, provider: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason, provider=provider)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying the same request cannot succeed."""


class UnsupportedError(PermanentProviderError):
    """The provider cannot serve this language, voice or option."""
