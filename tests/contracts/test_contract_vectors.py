"""Python side of the golden vectors (Node: tests/node/contracts.test.mjs, Go: contracts/go).

Every vector decodes with the generated Python code, matches its canonical JSON, re-encodes
with its unknown fields intact, and reports the unknown-field count the manifest records.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _contract_helpers import TESTDATA, load_script
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

import xypipe.contracts as contracts

MANIFEST = json.loads((TESTDATA / "vectors.json").read_text())
VECTORS: list[dict[str, Any]] = MANIFEST["vectors"]
CLASSES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (getattr(contracts, n) for n in contracts.__all__)
    if isinstance(cls, type) and issubclass(cls, Message)
}


def _has_int_keyed_map(msg: Message) -> bool:
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["key"].cpp_type != field.CPPTYPE_STRING:
                return True
        elif field.is_repeated:
            if any(_has_int_keyed_map(v) for v in value):
                return True
        elif _has_int_keyed_map(value):
            return True
    return False


def test_every_message_type_is_exported_and_has_a_vector(image: bytes) -> None:
    gen_vectors = load_script("gen_vectors")
    pool = gen_vectors.load_pool(image)
    in_protos = {d.full_name for d in gen_vectors.message_types(pool, image)}
    assert in_protos == set(CLASSES), "xypipe.contracts must export every message type"
    assert in_protos == {v["message"] for v in VECTORS}
    assert any(v["unknown_fields"] for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_matches_json_and_round_trips_unknown_fields(
        vector: dict[str, Any], image: bytes) -> None:
    cls = CLASSES[vector["message"]]
    data = (TESTDATA / vector["binary"]).read_bytes()
    golden = json.loads((TESTDATA / vector["json"]).read_text())
    registry = CollectorRegistry()

    msg = contracts.decode(cls, data, where=vector["binary"], registry=registry)

    counted = registry.get_sample_value("contract_unknown_fields_total",
                                        {"message": vector["message"]}) or 0
    assert counted == vector["unknown_fields"]
    assert contracts.count_unknown_fields(msg) == vector["unknown_fields"]

    assert json_format.MessageToDict(msg) == golden
    known = cls()
    known.CopyFrom(msg)
    known.DiscardUnknownFields()
    assert json_format.ParseDict(golden, cls()) == known

    again = msg.SerializeToString(deterministic=True)
    if _has_int_keyed_map(msg):
        # upb writes integer map keys in descending order even when deterministic (the
        # vectors use ascending, as Go and protobuf-es do): same message, different bytes.
        assert sorted(again) == sorted(data)
    else:
        assert again == data
    # Unknown fields intact: what a v1 reader re-encodes, a v1+ reader reads as the original.
    gen_vectors = load_script("gen_vectors")
    plus = message_factory.GetMessageClass(
        gen_vectors.v1plus_pool(image).FindMessageTypeByName(vector["message"]))
    assert plus.FromString(again) == plus.FromString(data)
    assert cls.FromString(again) == msg
