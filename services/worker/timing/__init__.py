"""The timing engine: fit synthesized speech into each segment's time window.

`fit()` synthesizes every window through a `Synthesize` callable and returns clips
to place on the track, a per-segment `SegmentTiming` report and a `TimingSummary`.
Everything runs in-process (numpy, Rubber Band through pedalboard): no process per
segment.

Rules, per utterance (one window, or a stitched group of windows):

- Alignment (not a remedy): the take's leading silence is cut (to `lead_pad`), so
  speech starts at the window's start. The README promises exactly that, and it is
  what makes drift impossible: every utterance is placed at its own window start,
  whatever happened to the one before; `TimingSummary.max_start_offset` proves it.
- Remedies, cheapest artefact first, each only when the previous ones leave the
  speech longer than its room; `SegmentTiming.remedies` lists those used in order:
  1. ``native_rate``: the first take is at speed 1.0 (clamped into the provider's
     range). If its speech (trailing silence excluded, since cutting silence costs
     nothing) is longer than the window, it is re-synthesized once at the rate that
     should fit, within [1.0, min(max_speed, policy.max_native_speed)]. Speech that
     is too short is never slowed down (the "drawl" complaint); it ends early and
     the IWSLT measure reports it.
  2. ``trim_silence``: trailing silence is cut (to `tail_pad`).
  3. ``borrow_silence``: the speech runs on into the pause after the window, up to
     the next window's start (never into it) and at most `max_borrow`. Never with
     `use_precise_timing`.
  4. ``time_stretch``: Rubber Band, ratio <= policy.max_stretch <= HARD_MAX_STRETCH.
  5. ``truncate``: the rest is cut with a `fade_out` ramp that ends inside the room;
     `SegmentTiming.overrun` says how many seconds of speech were lost.
- ``use_stitching``: consecutive windows of the same speaker (equal `speaker`
  strings, so "" stitches with ""), each at most `stitch_max_segment` long, with
  gaps of at most `stitch_max_gap` and a joint span of at most `stitch_max_duration`,
  are synthesized as one utterance (texts joined by a space) and fitted into their
  joint window [first start, last end]. Every member reports the utterance's timing
  and lists the others in `stitched_with`. Only the first member's start is an
  honoured start.
- ``use_precise_timing``: every utterance is locked to its window: no borrowing.
  Combined with stitching, only windows that touch (gap <= 1 ms) are stitched, so
  the utterance never sounds in a gap or in another window; where inside the
  joint window the boundary between the touching members falls is the voice's
  choice (they are one sentence split by a cue break).
"""

from .engine import Fitted, fit, fit_stream, summarize
from .model import (
    HARD_MAX_STRETCH,
    REMEDIES,
    Clip,
    FitPolicy,
    SegmentTiming,
    Synthesize,
    TimingSummary,
    Window,
)

__all__ = [
    "HARD_MAX_STRETCH",
    "REMEDIES",
    "Clip",
    "FitPolicy",
    "Fitted",
    "SegmentTiming",
    "Synthesize",
    "TimingSummary",
    "Window",
    "fit",
    "fit_stream",
    "summarize",
]
