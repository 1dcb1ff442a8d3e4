"""AIP-158 page sizes and page tokens (gateway.pagination)."""

from __future__ import annotations

import base64

import pytest

from dubbing.errors import Reason
from dubbing.v1 import dubbing_pb2 as pb
from gateway.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    InvalidPageRequest,
    PageTokenCodec,
    fill_page,
    page_size,
    states_filter_key,
)

SECRET = b"0123456789abcdef0123456789abcdef"
JOB_ID = "0b7f3c9e-8a41-4e52-9c1d-2f6a5b8e7d10"
CURSOR = (1_763_700_000_123_456, JOB_ID)
FILTER = states_filter_key([1, 2])


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def unraw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def codec() -> PageTokenCodec:
    return PageTokenCodec(SECRET)


# -- page_size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "served"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (50, 50),
        (999, 999),
        (1000, 1000),
        (1001, MAX_PAGE_SIZE),
        (2**31 - 1, MAX_PAGE_SIZE),
    ],
)
def test_page_size_coercion(requested: int, served: int) -> None:
    assert page_size(requested) == served


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_negative_page_size_is_invalid(requested: int) -> None:
    with pytest.raises(InvalidPageRequest) as info:
        page_size(requested)
    assert info.value.field == "page_size"
    assert info.value.reason == Reason.INVALID_ARGUMENT
    assert info.value.violations == [("page_size", info.value.description)]


def test_documented_defaults() -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)


# -- tokens: round trip -----------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        CURSOR,
        (0, ""),
        (-1, "j"),
        (2**63 - 1, "x" * 255),
        (-(2**63), "émoji-🎙"),
    ],
)
def test_round_trip(codec: PageTokenCodec, cursor: tuple[int, str]) -> None:
    token = codec.encode(cursor, FILTER)
    assert codec.decode(token, FILTER) == cursor


def test_round_trip_across_instances_with_the_same_secret() -> None:
    token = PageTokenCodec(SECRET).encode(CURSOR, FILTER)
    assert PageTokenCodec(SECRET).decode(token, FILTER) == CURSOR


def test_token_is_url_safe_and_unpadded(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, FILTER)
    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(token) < 100


def test_token_is_opaque(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, FILTER)
    data = raw(token)
    assert JOB_ID.encode() not in data
    assert JOB_ID not in token
    assert str(CURSOR[0]).encode() not in data
    assert CURSOR[0].to_bytes(8, "big", signed=True) not in data
    # The same id in another cursor shares no plaintext prefix in the token either.
    other = raw(codec.encode((CURSOR[0] + 1, JOB_ID), FILTER))
    assert data[-len(JOB_ID) :] != other[-len(JOB_ID) :]


def test_tokens_are_deterministic_and_distinct(codec: PageTokenCodec) -> None:
    assert codec.encode(CURSOR, FILTER) == codec.encode(CURSOR, FILTER)
    assert codec.encode(CURSOR, FILTER) != codec.encode((CURSOR[0], JOB_ID + "x"), FILTER)
    assert codec.encode(CURSOR, FILTER) != codec.encode(CURSOR, states_filter_key([1]))


def test_encode_rejects_cursors_it_cannot_carry(codec: PageTokenCodec) -> None:
    with pytest.raises(ValueError):
        codec.encode((2**63, "a"), FILTER)
    with pytest.raises(ValueError):
        codec.encode((0, "x" * 256), FILTER)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        PageTokenCodec(b"short")


# -- tokens: rejection --------------------------------------------------------------


def assert_rejected(codec: PageTokenCodec, token: str, filter_key: str = FILTER) -> None:
    with pytest.raises(InvalidPageRequest) as info:
        codec.decode(token, filter_key)
    assert info.value.field == "page_token"
    assert info.value.reason == Reason.INVALID_PAGE_TOKEN


def test_every_flipped_byte_is_rejected(codec: PageTokenCodec) -> None:
    data = raw(codec.encode(CURSOR, FILTER))
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[i] ^= bit
            assert_rejected(codec, unraw(bytes(tampered)))


def test_truncated_or_extended_tokens_are_rejected(codec: PageTokenCodec) -> None:
    data = raw(codec.encode(CURSOR, FILTER))
    assert_rejected(codec, unraw(data[:-1]))
    assert_rejected(codec, unraw(data + b"\x00"))
    assert_rejected(codec, unraw(data[:10]))


def test_other_filter_is_rejected(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, states_filter_key([1, 2]))
    assert_rejected(codec, token, states_filter_key([1]))
    assert_rejected(codec, token, states_filter_key([]))
    assert_rejected(codec, token, "states=1,2 ")


def test_filter_key_ignores_order_and_repeats(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, states_filter_key([2, 1]))
    assert codec.decode(token, states_filter_key([1, 2, 2])) == CURSOR
    assert states_filter_key([]) == "states="


def test_other_secret_is_rejected(codec: PageTokenCodec) -> None:
    token = PageTokenCodec(b"another secret of 32 bytes......").encode(CURSOR, FILTER)
    assert_rejected(codec, token)


def test_wrong_version_is_rejected(codec: PageTokenCodec) -> None:
    data = bytearray(raw(codec.encode(CURSOR, FILTER)))
    data[0] = 2
    assert_rejected(codec, unraw(bytes(data)))


def test_non_canonical_base64_is_rejected(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, FILTER)
    assert len(token) % 4 != 0  # so the last character carries unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    aliases = [
        token[:-1] + c for c in alphabet if c != token[-1] and raw(token[:-1] + c) == raw(token)
    ]
    assert aliases  # the same bytes, spelled differently
    for alias in aliases:
        assert_rejected(codec, alias)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "abc",
        "!!!!",
        "not a token",
        "eyJpZCI6ICJqMSJ9",  # base64 of readable JSON
        "A" * 600,
        "A" * 100,
    ],
)
def test_garbage_is_rejected(codec: PageTokenCodec, garbage: str) -> None:
    assert_rejected(codec, garbage)


def test_padded_or_standard_alphabet_tokens_are_rejected(codec: PageTokenCodec) -> None:
    token = codec.encode(CURSOR, FILTER)
    assert_rejected(codec, token + "=" * (-len(token) % 4 or 4))
    standard = base64.b64encode(raw(token)).decode()
    if standard.rstrip("=") != token:  # only differs when it holds + or /
        assert_rejected(codec, standard)
    assert_rejected(codec, " " + token)


# -- fill_page ------------------------------------------------------------------------


def test_a_page_is_cut_by_bytes_but_always_serves_one() -> None:
    jobs = [pb.Job(id=f"{i:04d}", stage="x" * 1000) for i in range(10)]
    each = jobs[0].ByteSize()
    assert fill_page(jobs, 4) == jobs[:4]
    assert fill_page(jobs, 10, max_bytes=3 * each + 20) == jobs[:3]
    assert fill_page(jobs, 10, max_bytes=10) == jobs[:1]  # larger than a page, still served
    assert fill_page([], 10) == []
