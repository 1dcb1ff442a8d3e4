"""Rules the published API keeps, checked on the generated descriptors."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_vendored_error_protos_are_the_ones_errors_are_built_from(tmp_path: Path) -> None:
    """A client in another language decodes ErrorInfo and BadRequest from
    third_party/proto alone: the vendored files must match what the service packs."""
    import grpc_tools  # type: ignore[import-untyped]
    from google.protobuf import descriptor_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_tools import protoc  # type: ignore[import-untyped]

    root = Path(__file__).resolve().parents[3] / "third_party" / "proto"
    out = tmp_path / "set.binpb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/any.proto...
    args = ["protoc", f"-I{root}", f"-I{well_known}", f"--descriptor_set_out={out}"]
    files = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    assert protoc.main([*args, *files]) == 0
    vendored = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    by_name = {f"google.rpc.{m.name}": m for f in vendored.file for m in f.message_type}
    for runtime in (
        status_pb2.Status.DESCRIPTOR,
        error_details_pb2.ErrorInfo.DESCRIPTOR,
        error_details_pb2.BadRequest.DESCRIPTOR,
        error_details_pb2.BadRequest.FieldViolation.DESCRIPTOR,
    ):
        top = runtime.full_name.split(".")[2]
        message = by_name[f"google.rpc.{top}"]
        if runtime.containing_type is not None:
            message = next(n for n in message.nested_type if n.name == runtime.name)
        vendored_fields = {(f.name, f.number, f.type) for f in message.field}
        runtime_fields = {(f.name, f.number, f.type) for f in runtime.fields}
        assert runtime_fields <= vendored_fields, runtime.full_name
