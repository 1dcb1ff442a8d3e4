"""The offline voice: libespeak-ng, loaded in-process through ctypes.

It needs no network, no key and no model download, which makes it the provider
for development, tests and air-gapped installs. It sounds robotic; that is the
price.

libespeak-ng keeps one global synthesiser (current voice, rate, the output
callback) and is not thread-safe: two threads inside it at once crash the
process. Every call into it holds `_LOCK`, one lock for the whole process, and
synthesis runs on `_EXECUTOR`, a single thread of its own. Synthesis is fast
(a few milliseconds per second of speech), so serialising costs little.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import espeakng_loader
import numpy as np
import numpy.typing as npt

from dubbing.errors import Reason

from .base import Capabilities, Gender, Language, Speech, SynthesisRequest
from .errors import PermanentProviderError, UnsupportedError

PROVIDER = "local"

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # otherwise a data error makes the library call exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_EE_OK = 0
_RATE_NORMAL = 175  # words per minute at speed 1.0
_RATE_MINIMUM = 80  # espeak clamps anything slower to this
_RATE_MAXIMUM = 450  # above this espeak switches to sonic time-stretching, not its own timing

# Both ends sit inside [_RATE_MINIMUM, _RATE_MAXIMUM] / _RATE_NORMAL = [0.457, 2.571],
# the range espeak renders by adjusting its own phoneme timing.
MIN_SPEED = 0.5
MAX_SPEED = 2.5
MAX_CHARS_PER_REQUEST = 5000

# Measured on en/fr/de: f3 is the clearly female variant (about 200 Hz against the
# default voices' 100 Hz); the default variant of every bundled voice is male.
_FEMALE_VARIANT = "f3"

# espeak's language tags that are not well-formed or not canonical BCP-47.
_TAG_OVERRIDES = {
    "zh-cmn": "cmn",  # extlang form; the canonical tag is the extlang itself
    "zh-yue": "yue",
    "hy-arevela": "hy",  # deprecated grandfathered tags
    "hy-arevmda": "hyw",
    # espeak put dialect names where BCP-47 expects a region ("ba" would read as Bosnia).
    "ca-ba": "ca-ES-balear",
    "ca-va": "ca-ES-valencia",
    "ca-nw": "ca-x-nw",
    "ru-cl": "ru-x-cl",
    "en-us-nyc": "en-US-x-nyc",
    "chr-us-qaaa-x-west": "chr-Qaaa-US-x-west",
    "piqd": "tlh-Piqd",  # Klingon written in pIqaD; 4-letter primary subtags are reserved
}


def bcp47(tag: str) -> str:
    """Canonical casing of an espeak language tag: `en-gb-x-rp` -> `en-GB-x-rp`."""
    lowered = tag.strip().lower().replace("_", "-")
    if lowered in _TAG_OVERRIDES:
        return _TAG_OVERRIDES[lowered]
    parts = lowered.split("-")
    out = [parts[0]]
    private = False
    for part in parts[1:]:
        if part == "x":
            private = True
        elif not private and len(part) == 4 and part.isalpha():
            part = part.title()  # script
        elif not private and (
            (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit())
        ):
            part = part.upper()  # region
        out.append(part)
    return "-".join(out)


@dataclass(frozen=True, slots=True)
class _Voice:
    code: str
    name: str
    identifier: str  # espeak voice file under espeak-ng-data/voices or lang, e.g. "gmw/en-US"


class _EspeakVoice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        # Not a plain string: (priority byte, NUL-terminated tag) pairs ending in a 0 byte.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 1 aborts.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

_LOCK = threading.Lock()
# One thread, because only one synthesis can run at a time anyway. With
# asyncio.to_thread a burst of requests would park threads of the loop's shared
# default pool on _LOCK and starve everything else that uses it.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
# Filled by the callback during one espeak_Synth call; only touched while holding _LOCK.
_chunks: list[bytes] = []


def _on_samples(wav: int | None, numsamples: int, _events: int | None) -> int:
    # An exception cannot cross back into C (ctypes would print and return 0), so
    # fail closed: abort the synthesis and let the caller see missing audio.
    try:
        if wav and numsamples > 0:
            _chunks.append(ctypes.string_at(wav, numsamples * 2))
        return 0
    except Exception:
        return 1


# Module-level so the C side never holds a pointer to a collected trampoline.
_SYNTH_CALLBACK = _SynthCallback(_on_samples)


class _Engine:
    """The process's single libespeak-ng instance. Use only while holding `_LOCK`."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ListVoices.argtypes = (ctypes.POINTER(_EspeakVoice),)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        )
        lib.espeak_Synth.restype = ctypes.c_int
        self._lib = lib

        data_path = espeakng_loader.get_data_path().encode()
        # Synchronous mode: espeak_Synth returns only after handing every sample to
        # the callback on the calling thread, so no espeak thread outlives the call.
        rate = int(
            lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {data_path!r}")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(_SYNTH_CALLBACK)
        self.voices = self._list_voices()
        self.variants = self._list_variants()

    def _voice_list(self, spec: _EspeakVoice | None) -> list[_EspeakVoice]:
        arg = ctypes.byref(spec) if spec is not None else None
        array = self._lib.espeak_ListVoices(arg)
        out: list[_EspeakVoice] = []
        i = 0
        while array[i]:
            out.append(array[i].contents)
            i += 1
        return out

    def _list_voices(self) -> dict[str, _Voice]:
        """Every language tag any voice answers to, mapped to its preferred voice."""
        best: dict[str, tuple[int, _Voice]] = {}

        def offer(code: str, priority: int, name: str, identifier: str) -> None:
            key = code.lower()
            # Lower priority numbers win (espeak's own ranking); ties keep the first voice.
            if key not in best or priority < best[key][0]:
                best[key] = (priority, _Voice(code=code, name=name, identifier=identifier))

        entries: list[tuple[str, str, list[tuple[int, str]]]] = []
        for v in self._voice_list(None):
            name = (v.name or b"").decode("utf-8", "replace").strip()
            identifier = (v.identifier or b"").decode("utf-8", "replace")
            if not identifier or identifier.startswith("mb/"):
                continue  # mbrola voices need a separate binary database we do not ship
            entries.append((name, identifier, _parse_languages(v.languages)))

        for name, identifier, languages in entries:
            for priority, tag in languages:
                offer(bcp47(tag), priority, name, identifier)
            # The file name is a tag too, and the only one that reaches some voices
            # (the Jyutping Cantonese voice lists only "yue", which plain Cantonese owns).
            top = min((p for p, _ in languages), default=5)
            offer(bcp47(identifier.rsplit("/", 1)[-1]), top, name, identifier)
        # Capabilities.language() falls back from "chr-US" to "chr", never from "chr" to
        # "chr-Qaaa-US-x-west", so give every primary subtag an entry of its own.
        for name, identifier, languages in entries:
            for _, tag in languages:
                primary = bcp47(tag).split("-")[0]
                if primary.lower() not in best:
                    offer(primary, 100, name, identifier)
        return {key: voice for key, (_, voice) in best.items()}

    def _list_variants(self) -> dict[str, str]:
        """Voice variants (`!v/...` files) by lower-cased file name -> file name."""
        spec = _EspeakVoice()
        spec.name = None
        spec.identifier = None
        # ListVoices treats the language "variant" as "list the variants instead".
        variant = ctypes.create_string_buffer(b"variant")
        spec.languages = ctypes.cast(variant, ctypes.c_void_p).value
        out: dict[str, str] = {}
        for v in self._voice_list(spec):
            identifier = (v.identifier or b"").decode("utf-8", "replace")
            file_name = identifier.rsplit("/", 1)[-1]
            if file_name:
                out[file_name.lower()] = file_name
        return out

    def synthesize(self, voice: str, text: bytes, rate: int) -> npt.NDArray[np.int16]:
        status = int(self._lib.espeak_SetVoiceByName(voice.encode()))
        if status != _EE_OK:
            # A failed SetVoiceByName keeps the previous voice; speaking with it would
            # silently produce the wrong language.
            raise PermanentProviderError(
                f"espeak could not load voice {voice!r} (status {status})",
                reason=Reason.VOICE_LOAD_FAILED,
                provider=PROVIDER,
            )
        # After the voice: a variant file may carry its own speed.
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        _chunks.clear()
        try:
            status = int(
                self._lib.espeak_Synth(
                    text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
            )
            if status != _EE_OK:
                raise PermanentProviderError(
                    f"espeak_Synth failed (status {status})",
                    reason=Reason.SYNTHESIS_FAILED,
                    provider=PROVIDER,
                )
            return np.frombuffer(b"".join(_chunks), dtype="<i2").astype(np.int16)
        finally:
            _chunks.clear()


_engine: _Engine | None = None


def _get_engine() -> _Engine:
    """The engine, initialised on first use. Caller holds `_LOCK`."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def _parse_languages(address: int | None) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    if not address:
        return out
    while True:
        priority = ctypes.c_ubyte.from_address(address).value
        if priority == 0:
            return out
        raw = ctypes.string_at(address + 1)
        out.append((priority, raw.decode("ascii", "replace")))
        address += len(raw) + 2


def _clean_text(text: str) -> str:
    # Control characters are not speech, and espeak reads \x01 as the start of an
    # embedded command that could change rate or volume mid-utterance; NUL would
    # end the C string early.
    return "".join(
        " " if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" else ch for ch in text
    )


class LocalProvider:
    """Offline text-to-speech with libespeak-ng. Safe to call concurrently."""

    def __init__(self) -> None:
        with _LOCK:
            engine = _get_engine()
            self._sample_rate = engine.sample_rate
            self._voices = dict(engine.voices)
            self._variants = dict(engine.variants)
        languages = sorted(
            (
                Language(code=v.code, name=v.name, genders=(Gender.FEMALE, Gender.MALE))
                for v in self._voices.values()
            ),
            key=lambda lang: lang.code.lower(),
        )
        self._capabilities = Capabilities(
            provider=PROVIDER,
            languages=tuple(languages),
            min_speed=MIN_SPEED,
            max_speed=MAX_SPEED,
            max_chars_per_request=MAX_CHARS_PER_REQUEST,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def variants(self) -> tuple[str, ...]:
        """Names accepted as `SynthesisRequest.voice_id` (espeak voice variants)."""
        return tuple(sorted(self._variants.values(), key=str.lower))

    def _voice_spec(self, request: SynthesisRequest) -> str:
        language = self._capabilities.language(request.language.replace("_", "-"))
        if language is None:
            raise UnsupportedError(
                f"espeak has no voice for language {request.language!r}",
                reason=Reason.LANGUAGE_NOT_SUPPORTED,
                provider=PROVIDER,
            )
        voice = self._voices[language.code.lower()]
        if request.voice_id:
            variant = self._variants.get(request.voice_id.lower())
            if variant is None:
                raise UnsupportedError(
                    f"unknown espeak voice variant {request.voice_id!r}",
                    reason=Reason.VOICE_NOT_FOUND,
                    provider=PROVIDER,
                )
        elif request.gender is Gender.FEMALE:
            variant = _FEMALE_VARIANT
        elif request.gender is Gender.MALE:
            variant = ""  # every bundled voice is male by default
        else:
            raise UnsupportedError(
                f"the local provider has no {request.gender.value} voice",
                reason=Reason.GENDER_NOT_SUPPORTED,
                provider=PROVIDER,
            )
        return f"{voice.identifier}+{variant}" if variant else voice.identifier

    def _rate(self, speed: float) -> int:
        # A hair of tolerance so a caller's float arithmetic on the advertised bounds passes.
        if not math.isfinite(speed) or not MIN_SPEED - 1e-6 <= speed <= MAX_SPEED + 1e-6:
            raise UnsupportedError(
                f"speed {speed} outside [{MIN_SPEED}, {MAX_SPEED}]",
                reason=Reason.SPEED_NOT_SUPPORTED,
                provider=PROVIDER,
            )
        return min(max(round(_RATE_NORMAL * speed), _RATE_MINIMUM), _RATE_MAXIMUM)

    async def synthesize(self, request: SynthesisRequest) -> Speech:
        text = _clean_text(request.text)
        if not text.strip():
            raise PermanentProviderError(
                "nothing to say: the text is empty", reason=Reason.EMPTY_TEXT, provider=PROVIDER
            )
        if len(request.text) > MAX_CHARS_PER_REQUEST:
            raise PermanentProviderError(
                f"text has {len(request.text)} characters, the limit is {MAX_CHARS_PER_REQUEST}",
                reason=Reason.TEXT_TOO_LONG,
                provider=PROVIDER,
            )
        voice = self._voice_spec(request)
        rate = self._rate(request.speed)
        # Lone surrogates cannot be encoded; a "?" is better than refusing the segment.
        utf8 = text.encode("utf-8", "replace")

        def run() -> npt.NDArray[np.int16]:
            with _LOCK:
                return _get_engine().synthesize(voice, utf8, rate)

        pcm = await asyncio.get_running_loop().run_in_executor(_EXECUTOR, run)
        samples = (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32)
        return Speech(samples=samples, sample_rate=self._sample_rate, characters=len(request.text))

    async def aclose(self) -> None:
        # The engine is shared by the whole process and cheap to keep; espeak_Terminate
        # here would pull it from under other LocalProvider instances.
        return None
