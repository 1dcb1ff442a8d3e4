"""The offline espeak-ng provider, exercised for real (no mocks: the library is in the wheel)."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pytest

from worker.providers.base import Gender, Provider, Speech, SynthesisRequest
from worker.providers.errors import PermanentProviderError, UnsupportedError
from worker.providers.local import MAX_SPEED, MIN_SPEED, LocalProvider, bcp47

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog.",
    "fr": "Le renard brun saute par-dessus le chien paresseux.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "es": "El veloz zorro marrón salta sobre el perro perezoso.",
}


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider()


def rms(x: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def envelope(x: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float64]:
    """RMS per 20 ms frame."""
    frame = sample_rate // 50
    n = len(x) // frame
    frames = x[: n * frame].astype(np.float64).reshape(n, frame)
    return np.asarray(np.sqrt(np.mean(np.square(frames), axis=1)), dtype=np.float64)


def same_utterance(a: Speech, b: Speech) -> bool:
    """Whether two renderings of one request are alike: same length, loudness contour and pitch.

    espeak is not deterministic across calls: glottal phase, pitch flutter and a
    little timing carry over from the previous utterance, so samples differ and
    lengths wander by up to ~250 samples. A mix-up between concurrent calls (chunks
    of two utterances collected together, another call's voice or rate) is far
    larger than that.
    """
    if abs(len(a.samples) - len(b.samples)) > 0.02 * len(a.samples):
        return False
    n = min(len(a.samples), len(b.samples))
    ea, eb = envelope(a.samples[:n], a.sample_rate), envelope(b.samples[:n], b.sample_rate)
    if float(np.corrcoef(ea, eb)[0, 1]) < 0.9:
        return False
    fa, fb = median_f0(a.samples, a.sample_rate), median_f0(b.samples, b.sample_rate)
    return abs(fa - fb) < 0.1 * fa


def median_f0(x: npt.NDArray[np.float32], sample_rate: int) -> float:
    """Median fundamental over voiced frames, by the autocorrelation peak in 60-500 Hz."""
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    lo, hi = sample_rate // 500, sample_rate // 60
    estimates = []
    for i in range(0, len(x) - frame, hop):
        f = x[i : i + frame].astype(np.float64)
        f = f - f.mean()
        if np.sqrt(np.mean(f**2)) < 0.02:
            continue  # silence
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:  # strongly periodic, i.e. voiced
            estimates.append(sample_rate / lag)
    assert len(estimates) >= 20, "too few voiced frames to estimate pitch"
    return float(np.median(estimates))


def test_is_a_provider(provider: LocalProvider) -> None:
    p: Provider = provider
    assert p.capabilities.provider == "local"


def test_capabilities(provider: LocalProvider) -> None:
    caps = provider.capabilities
    codes = [lang.code for lang in caps.languages]
    assert len(codes) == len(set(c.lower() for c in codes)), "duplicate language codes"
    assert len({c.split("-")[0].lower() for c in codes}) > 50
    for code in ("en", "en-US", "en-GB", "fr", "de", "es", "ja", "zh", "pt-BR", "ar", "hi", "ru"):
        lang = caps.language(code)
        assert lang is not None, code
        assert lang.genders == (Gender.FEMALE, Gender.MALE)
        assert lang.name
    assert caps.language("en-US").name == "English (America)"  # type: ignore[union-attr]
    assert caps.language("zh-CN") is not None  # falls back to "zh"
    assert caps.language("xx") is None
    assert caps.min_speed == MIN_SPEED == 0.5
    assert caps.max_speed == MAX_SPEED == 2.5
    assert caps.max_chars_per_request >= 1000
    assert provider.sample_rate == 22050


@pytest.mark.parametrize(
    ("espeak", "expected"),
    [
        ("en-us", "en-US"),
        ("en-gb-x-rp", "en-GB-x-rp"),
        ("cmn-latn-pinyin", "cmn-Latn-pinyin"),
        ("es-419", "es-419"),
        ("vi-vn-x-central", "vi-VN-x-central"),
        ("zh-cmn", "cmn"),
        ("ca-ba", "ca-ES-balear"),
        ("fa-latn", "fa-Latn"),
    ],
)
def test_bcp47(espeak: str, expected: str) -> None:
    assert bcp47(espeak) == expected


@pytest.mark.parametrize("language", sorted(SENTENCES))
async def test_speaks(provider: LocalProvider, language: str) -> None:
    text = SENTENCES[language]
    speech = await provider.synthesize(SynthesisRequest(text=text, language=language))
    assert speech.samples.dtype == np.float32
    assert speech.samples.ndim == 1
    assert speech.sample_rate == provider.sample_rate
    assert 1.0 < speech.duration < 10.0
    assert float(np.max(np.abs(speech.samples))) <= 1.0
    assert rms(speech.samples) > 0.03
    assert speech.characters == len(text)


async def test_regional_and_fallback_codes(provider: LocalProvider) -> None:
    for code in ("en-US", "en-AU", "pt-BR", "zh-CN", "ja"):
        speech = await provider.synthesize(SynthesisRequest(text="hello", language=code))
        assert rms(speech.samples) > 0.01, code


async def test_faster_speed_is_shorter(provider: LocalProvider) -> None:
    text = SENTENCES["en"]

    async def duration(speed: float) -> float:
        req = SynthesisRequest(text=text, language="en", speed=speed)
        return (await provider.synthesize(req)).duration

    normal, fast, slow = await duration(1.0), await duration(1.5), await duration(0.5)
    # Rendered duration tracks the rate closely (1/1.5 = 0.67, 1/0.5 = 2).
    assert 0.55 < fast / normal < 0.8
    assert 1.7 < slow / normal < 2.3
    assert await duration(MAX_SPEED) < fast


@pytest.mark.parametrize("speed", [0.1, 0.49, 2.6, float("nan"), float("inf")])
async def test_speed_outside_range(provider: LocalProvider, speed: float) -> None:
    with pytest.raises(UnsupportedError) as err:
        await provider.synthesize(SynthesisRequest(text="hi", language="en", speed=speed))
    assert err.value.reason == "SPEED_NOT_SUPPORTED"


@pytest.mark.parametrize("language", ["en", "fr", "de"])
async def test_female_voice_is_higher(provider: LocalProvider, language: str) -> None:
    text = SENTENCES[language]
    male = await provider.synthesize(SynthesisRequest(text, language, gender=Gender.MALE))
    female = await provider.synthesize(SynthesisRequest(text, language, gender=Gender.FEMALE))
    f0_male = median_f0(male.samples, male.sample_rate)
    f0_female = median_f0(female.samples, female.sample_rate)
    assert 70 < f0_male < 160
    assert f0_female > 1.4 * f0_male


async def test_voice_variant(provider: LocalProvider) -> None:
    assert "m3" in provider.variants
    speech = await provider.synthesize(SynthesisRequest("hello", "en", voice_id="M3"))
    assert rms(speech.samples) > 0.01
    with pytest.raises(UnsupportedError) as err:
        await provider.synthesize(SynthesisRequest("hello", "en", voice_id="nobody"))
    assert err.value.reason == "VOICE_NOT_FOUND"


async def test_neutral_gender_unsupported(provider: LocalProvider) -> None:
    with pytest.raises(UnsupportedError) as err:
        await provider.synthesize(SynthesisRequest("hello", "en", gender=Gender.NEUTRAL))
    assert err.value.reason == "GENDER_NOT_SUPPORTED"


@pytest.mark.parametrize("language", ["xx", "xx-US", "", "klingon", "english"])
async def test_unknown_language(provider: LocalProvider, language: str) -> None:
    with pytest.raises(UnsupportedError) as err:
        await provider.synthesize(SynthesisRequest(text="hello", language=language))
    assert err.value.reason == "LANGUAGE_NOT_SUPPORTED"
    assert err.value.provider == "local"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00\x01 \x7f"])
async def test_empty_text(provider: LocalProvider, text: str) -> None:
    with pytest.raises(PermanentProviderError) as err:
        await provider.synthesize(SynthesisRequest(text=text, language="en"))
    assert err.value.reason == "EMPTY_TEXT"
    assert not isinstance(err.value, UnsupportedError)


async def test_text_too_long(provider: LocalProvider) -> None:
    limit = provider.capabilities.max_chars_per_request
    with pytest.raises(PermanentProviderError) as err:
        await provider.synthesize(SynthesisRequest(text="a " * limit, language="en"))
    assert err.value.reason == "TEXT_TOO_LONG"


@pytest.mark.parametrize(
    "text",
    [
        "<speak>1 < 2 & 3 > 2</speak> &amp; \"quoted\" 'single'",
        "Emoji 😀🎉 and symbols ©®™ and CJK 你好",
        "control\x00chars\x01 5S\x07 here",
        "[[h@'loU]] <break time='3s'/> \\ backslash",
        "lone surrogate \ud800 here",
    ],
)
async def test_awkward_text(provider: LocalProvider, text: str) -> None:
    reference = await provider.synthesize(SynthesisRequest(text=SENTENCES["en"], language="en"))
    speech = await provider.synthesize(SynthesisRequest(text=text, language="en"))
    assert rms(speech.samples) > 0.01
    assert 0.5 < speech.duration < 20
    # Nothing in the text may leak into the next utterance's settings.
    after = await provider.synthesize(SynthesisRequest(text=SENTENCES["en"], language="en"))
    assert same_utterance(after, reference)


async def test_long_text(provider: LocalProvider) -> None:
    limit = provider.capabilities.max_chars_per_request
    sentence = "This sentence is repeated to make a long text. "
    text = (sentence * (limit // len(sentence)))[:limit]
    speech = await provider.synthesize(SynthesisRequest(text=text, language="en"))
    # About 175 words per minute; 5000 characters is around 850 words.
    assert 150 < speech.duration < 600
    assert rms(speech.samples[-speech.sample_rate * 5 :]) > 0.01, "the end is missing"


async def test_concurrent_calls_match_sequential(provider: LocalProvider) -> None:
    requests = [
        SynthesisRequest(text=SENTENCES[lang], language=lang, gender=gender, speed=speed)
        for lang, gender, speed in [
            ("en", Gender.FEMALE, 1.0),
            ("fr", Gender.MALE, 1.3),
            ("de", Gender.FEMALE, 0.8),
            ("es", Gender.MALE, 1.0),
            ("en", Gender.MALE, 2.0),
            ("fr", Gender.FEMALE, 1.0),
            ("de", Gender.MALE, 1.1),
            ("es", Gender.FEMALE, 0.6),
        ]
    ]
    sequential = [await provider.synthesize(r) for r in requests]
    concurrent = await asyncio.gather(*(provider.synthesize(r) for r in requests * 2))
    for i, speech in enumerate(concurrent):
        expected = sequential[i % len(requests)]
        # Interleaved calls would mix voices, rates or sample chunks, changing lengths.
        assert same_utterance(speech, expected), requests[i % len(requests)]


async def test_instances_share_the_engine(provider: LocalProvider) -> None:
    other = LocalProvider()
    req = SynthesisRequest(text=SENTENCES["de"], language="de")
    a, b = await asyncio.gather(provider.synthesize(req), other.synthesize(req))
    assert same_utterance(a, b)
    await other.aclose()
    assert rms((await provider.synthesize(req)).samples) > 0.03


async def test_same_utterance_tells_requests_apart(provider: LocalProvider) -> None:
    # The concurrency checks above rely on this comparison noticing a mix-up.
    base = SynthesisRequest(text=SENTENCES["fr"], language="fr", gender=Gender.MALE)
    a, b = await provider.synthesize(base), await provider.synthesize(base)
    female = await provider.synthesize(SynthesisRequest(base.text, "fr", gender=Gender.FEMALE))
    faster = await provider.synthesize(SynthesisRequest(base.text, "fr", Gender.MALE, speed=1.3))
    assert same_utterance(a, b)
    assert not same_utterance(a, female)
    assert not same_utterance(a, faster)
