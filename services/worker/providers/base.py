"""The seam between the worker and the upstream voices.

A provider turns text into speech. It knows nothing about jobs, the bus or
timing: the worker asks it for one utterance at a time and places the audio
itself. Keeping it that small is what lets ElevenLabs, MiniMax and the offline
voice share one job pipeline.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from dubbing.conventions import match_language


class Gender(enum.Enum):
    FEMALE = "female"
    MALE = "male"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class Language:
    """A language a provider can speak, by BCP-47 code."""

    code: str
    name: str
    genders: tuple[Gender, ...]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do; workers advertise this, the gateway validates against it."""

    provider: str
    languages: tuple[Language, ...]
    # Speaking-rate multipliers the provider renders natively (1.0 = its normal rate).
    min_speed: float
    max_speed: float
    # Longest text one synthesize() call accepts.
    max_chars_per_request: int
    transcript_dubbing: bool = True
    media_dubbing: bool = False

    def language(self, code: str) -> Language | None:
        """The supported language matching `code` (``conventions.match_language``)."""
        return match_language(code, ((lang.code, lang) for lang in self.languages))


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    text: str
    language: str  # BCP-47
    gender: Gender = Gender.FEMALE
    voice_id: str = ""
    # Multiplier within [Capabilities.min_speed, Capabilities.max_speed].
    speed: float = 1.0
    settings: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Speech:
    """Mono float32 PCM in [-1, 1]."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    # Characters the provider billed for this utterance.
    characters: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class Provider(Protocol):
    """One upstream voice. Implementations must be safe to call concurrently."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def synthesize(self, request: SynthesisRequest) -> Speech: ...

    async def aclose(self) -> None: ...
