"""The rules every part of the service applies alike (dubbing.conventions)."""

from __future__ import annotations

import pytest

from dubbing.conventions import GENDER_BY_NAME, NAME_BY_GENDER, match_language
from dubbing.v1 import dubbing_pb2 as pb

OFFERED = [("fr", "French"), ("pt-BR", "Brazilian"), ("pt", "Portuguese"), ("zh-Hant", "Trad.")]


@pytest.mark.parametrize(
    ("wanted", "found"),
    [
        ("fr", "French"),
        ("FR", "French"),  # tags are case-insensitive (RFC 5646)
        ("fr-CA", "French"),  # served by its primary subtag
        ("pt-BR", "Brazilian"),  # an exact match wins over the primary subtag
        ("pt-PT", "Portuguese"),
        ("zh-hant", "Trad."),
        ("zh-Hans", None),  # "zh" alone is not offered
        ("de", None),
    ],
)
def test_match_language(wanted: str, found: str | None) -> None:
    assert match_language(wanted, OFFERED) == found


def test_gender_names_round_trip_every_named_gender() -> None:
    named = {v for v in pb.Gender.values() if v != pb.GENDER_UNSPECIFIED}
    assert set(GENDER_BY_NAME.values()) == named
    assert all(GENDER_BY_NAME[NAME_BY_GENDER[g]] == g for g in named)
