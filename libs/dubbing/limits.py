"""Limits that the gateway (which refuses), the worker (which enforces) and the client
(which explains) must agree on: defined once, each with its reason."""

from __future__ import annotations

# The longest programme a job may produce (transcript windows, background track):
# a feature film or a day's course fits; the worker's disk needs about 4 bytes per
# sample of it (1 GB for 3 h at 24 kHz), and a longer job would hold a worker for hours.
MAX_PROGRAMME_SECONDS = 6 * 3600

# The largest file the service takes in: an upload, a background fetched by URL. Two
# hours of 48 kHz stereo WAV is ~1.4 GB; a file over 2 GiB is almost surely a mistake.
MAX_MEDIA_BYTES = 2 << 30

# The largest time-stretch the timing engine applies, and so the largest
# max_stretch_ratio a request may ask for. Why 1.4:
# - the field's practical caps for time-compressed speech sit at 1.2x-1.4x
#   (open-dubbing 1.3x, VideoLingo accepts 1.2x and refuses past 1.4x; pyVideoTrans'
#   "uncapped" mode is the one its users complain about: lines "like x10" fast);
# - time-domain stretching (WSOLA, ffmpeg atempo) starts to echo beyond ~15%; we use
#   Rubber Band (phase vocoder with phase continuity and formant preservation), which
#   holds up clearly better, so the top of the field's range is usable, not more;
# - it stacks on a native rate of up to FitPolicy.max_native_speed (1.5), so the
#   fastest speech we ever produce is ~2.1x the voice's normal rate, the edge of the
#   range usually called intelligible. Anything that still does not fit is a reported
#   truncation, not faster speech.
MAX_STRETCH_RATIO = 1.4
