"""Rules the published API keeps, checked on the generated descriptors."""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor

from dubbing.v1 import dubbing_pb2 as pb


def _messages(descriptors: list[Descriptor]) -> list[Descriptor]:
    out = []
    for d in descriptors:
        out.append(d)
        out += _messages(list(d.nested_types))
    return out


def _all_messages() -> list[Descriptor]:
    return _messages(list(pb.DESCRIPTOR.message_types_by_name.values()))


def test_no_field_name_has_a_digit_right_after_an_underscore() -> None:
    """AIP-140: protobufjs and protoc disagree on the JSON name of `over_300ms`."""
    bad = [
        f"{m.full_name}.{f.name}"
        for m in _all_messages()
        for f in m.fields
        if re.search(r"_\d", f.name)
    ]
    assert bad == []


def test_json_names_are_the_lower_camel_case_every_runtime_derives() -> None:
    for message in _all_messages():
        for field in message.fields:
            head, *rest = field.name.split("_")
            assert field.json_name == head + "".join(w.capitalize() for w in rest), field.full_name
