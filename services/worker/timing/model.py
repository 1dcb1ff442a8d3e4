"""Inputs and outputs of the fitting engine (see the package docstring for the rules)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dubbing import limits

# Provider-independent ceiling for FitPolicy.max_stretch: why 1.4 is in dubbing.limits.
HARD_MAX_STRETCH: float = limits.MAX_STRETCH_RATIO

REMEDIES: tuple[str, ...] = (
    "native_rate",
    "trim_silence",
    "borrow_silence",
    "time_stretch",
    "truncate",
)


@dataclass(frozen=True, slots=True)
class Window:
    """One transcript segment: speak `text` inside [start, end) seconds."""

    index: int
    start: float
    end: float
    text: str
    speaker: str = ""


@dataclass(frozen=True, slots=True)
class FitPolicy:
    """How hard the engine may work a segment to make it fit. Times in seconds.

    Defaults and why:
    - max_stretch 1.25: the issue's default, the middle of the field's 1.2-1.4x caps.
    - max_native_speed 1.5: the provider's own rate is used up to min(its max_speed,
      this). ElevenLabs stops at 1.2 anyway; espeak (2.5) and MiniMax (2.0) would
      happily produce unfollowable speech. 1.5x normal (~260 words/min) is fast but
      clear; past it the stretch and then truncation take over.
    - rate_headroom 0.03: a voice's duration is not exactly 1/speed (espeak at 1.5
      lands ~7% long), so ask for 3% more than the arithmetic says.
    - max_resynthesis 1: every re-synthesis is billed again by paid providers; one
      retake at the computed rate, whatever remains goes down the ladder.
    - silence_threshold_db -40: a 10 ms frame is silent when its RMS is 40 dB below
      the take's loudest frame (and always below -80 dBFS). Breath noise and
      synthesizer dither sit well under it, unvoiced consonants above it.
    - lead_pad 0.005 / tail_pad 0.02: audio kept before the first and after the last
      non-silent frame when silence is cut, so attacks and decays are not clipped.
    - max_borrow inf: borrowing the pause after a window is free of artefacts, so it
      may run up to the next window's start (never into it); set a number to bound
      how far speech may lag behind the picture.
    - stitch_max_gap 0.3: a pause up to 0.3 s between two cues of one speaker is a
      pause inside one sentence (a subtitle line break), not a new turn.
    - stitch_max_segment 1.5 / stitch_max_duration 6.0: only short fragments
      ("Yes." "I see.") are joined, where a take of their own sounds clipped. A
      joined utterance is placed across the joint window and is spoken at its own
      pace, so a member's words may land in a neighbour's window: with longer cues
      that moved whole lines by seconds (measured end to end), so they keep their own
      windows and prosody.
    - fade_out 0.03: the ramp that ends a truncated segment: long enough not to click,
      short enough not to be heard as a fade.
    """

    max_stretch: float = 1.25
    use_stitching: bool = True
    use_precise_timing: bool = False
    max_native_speed: float = 1.5
    rate_headroom: float = 0.03
    max_resynthesis: int = 1
    silence_threshold_db: float = -40.0
    lead_pad: float = 0.005
    tail_pad: float = 0.02
    max_borrow: float = math.inf
    stitch_max_gap: float = 0.3
    stitch_max_segment: float = 1.5
    stitch_max_duration: float = 6.0
    fade_out: float = 0.03

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_stretch <= HARD_MAX_STRETCH:
            raise ValueError(
                f"max_stretch must be within [1.0, {HARD_MAX_STRETCH}], got {self.max_stretch}"
            )
        if not self.max_native_speed >= 1.0:
            raise ValueError(f"max_native_speed must be >= 1.0, got {self.max_native_speed}")
        if self.max_resynthesis < 0:
            raise ValueError(f"max_resynthesis must be >= 0, got {self.max_resynthesis}")
        if not self.silence_threshold_db < 0:
            raise ValueError("silence_threshold_db must be negative")
        for name in (
            "rate_headroom",
            "lead_pad",
            "tail_pad",
            "max_borrow",
            "stitch_max_gap",
            "stitch_max_segment",
            "stitch_max_duration",
            "fade_out",
        ):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class SegmentTiming:
    """What happened to one window. Times in seconds on the output timeline.

    For members of a stitched utterance, speech_start/speech_end, speed, stretch,
    remedies and overrun are the utterance's, shared by every member.
    """

    index: int
    window_start: float
    window_end: float
    speech_start: float
    speech_end: float
    speed: float  # native provider rate used (1.0 = normal)
    stretch: float  # time-stretch ratio applied (1.0 = none; >1 = sped up)
    remedies: tuple[str, ...]  # subset of REMEDIES, in the order applied
    overrun: float  # seconds of speech cut by truncation (0 if none)
    stitched_with: tuple[int, ...] = ()  # other window indexes in the same utterance


@dataclass(frozen=True, slots=True)
class TimingSummary:
    segments: int
    # IWSLT 2023 isochrony: share of segments with |speech duration - window duration|
    # > 0.3 s (a stitched utterance is compared with its joint window, for each member).
    share_off_by_more_than_0_3s: float
    # The same split by direction: speech shorter than its window (a short line,
    # never slowed down) or longer (it borrowed silence or was truncated).
    share_shorter_by_more_than_0_3s: float
    share_longer_by_more_than_0_3s: float
    mean_stretch: float
    max_stretch: float
    truncations: int  # segments whose speech was cut
    # Max |speech_start - window_start| over segments whose own start is honoured (all
    # but the 2nd.. members of stitched utterances, and segments with no audible speech):
    # the proof that no drift accumulates.
    max_start_offset: float


@dataclass(frozen=True, slots=True)
class Clip:
    """One utterance to write onto the track at `start` seconds, at the engine's rate."""

    start: float
    samples: npt.NDArray[np.float32]


# (text, speed) -> (mono float32 samples, their sample rate)
Synthesize = Callable[[str, float], Awaitable[tuple[npt.NDArray[np.float32], int]]]
