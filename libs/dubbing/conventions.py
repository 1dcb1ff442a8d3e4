"""Rules every part of the service applies the same way: gender names and the
language-match rule. Gateway, worker, client and CLI use these, never a copy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from dubbing.v1 import dubbing_pb2 as pb

# The API's genders by the name adverts, providers and the CLI use.
GENDER_BY_NAME: dict[str, pb.Gender.ValueType] = {
    "female": pb.GENDER_FEMALE,
    "male": pb.GENDER_MALE,
    "neutral": pb.GENDER_NEUTRAL,
}
NAME_BY_GENDER: dict[int, str] = {int(v): k for k, v in GENDER_BY_NAME.items()}

T = TypeVar("T")


def match_language(wanted: str, offered: Iterable[tuple[str, T]]) -> T | None:
    """What is offered for the BCP-47 tag `wanted`: an exact match (case-insensitive),
    else one offered for its primary subtag ("fr-CA" is served by "fr")."""
    by_code = {code.lower(): item for code, item in offered}
    tag = wanted.lower()
    return by_code.get(tag) or by_code.get(tag.split("-")[0])
