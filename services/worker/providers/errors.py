"""Errors a provider raises. The worker decides retry versus failure from the type alone.

ProviderError
├── TransientProviderError   retry later (a new attempt after a backoff): timeouts, 429, 5xx
└── PermanentProviderError   fail the job: the request cannot succeed (INVALID_ARGUMENT)
    ├── UnsupportedError     a language/voice/option this provider cannot do
    └── ProviderAccountError our key or account is at fault, not the caller
                             (FAILED_PRECONDITION: PROVIDER_AUTH_FAILED, PROVIDER_QUOTA_EXCEEDED)

Each permanent error carries the google.rpc code its failed job reports, so the
caller is never told "your request was wrong" for our key's fault.
"""

from __future__ import annotations

from typing import ClassVar

from dubbing.errors import Code, Reason


class ProviderError(Exception):
    """Base of every provider failure.

    `reason` is an UPPER_SNAKE code that ends up in the failed job's ErrorInfo.
    """

    def __init__(self, message: str, *, reason: Reason, provider: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.provider = provider


class TransientProviderError(ProviderError):
    """Worth retrying; `retry_after` (seconds) when the provider said how long to wait."""

    def __init__(
        self, message: str, *, reason: Reason, provider: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason, provider=provider)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying the same request cannot succeed."""

    code: ClassVar[Code] = Code.INVALID_ARGUMENT


class UnsupportedError(PermanentProviderError):
    """The provider cannot serve this language, voice or option."""


class ProviderAccountError(PermanentProviderError):
    """The provider refused our credentials or our account's quota: an operator's
    problem, reported as FAILED_PRECONDITION."""

    code: ClassVar[Code] = Code.FAILED_PRECONDITION
