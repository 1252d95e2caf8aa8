"""Runtime tolerance: a v1 consumer decodes a newer (v1+) producer's bytes and counts the
fields it does not know; malformed bytes raise a ContractError that says what and where."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from xypipe import _contracts
from xypipe.contracts import ContractError, Delta, PriceLevel, Tick, decode, use_registry

UNKNOWN = "contract_unknown_fields_total"


def _v1plus_tick_classes() -> tuple[type[Message], type[Message]]:
    """Tick and PriceLevel as a newer producer has them: Tick.region = 15, PriceLevel.venue = 4."""
    file = descriptor_pb2.FileDescriptorProto()
    Tick.DESCRIPTOR.file.CopyToProto(file)
    messages = {m.name: m for m in file.message_type}
    messages["Tick"].field.add(name="region", number=15, type=FieldDescriptor.TYPE_STRING,
                               label=FieldDescriptor.LABEL_OPTIONAL, json_name="region")
    messages["PriceLevel"].field.add(name="venue", number=4, type=FieldDescriptor.TYPE_STRING,
                                     label=FieldDescriptor.LABEL_OPTIONAL, json_name="venue")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("xy.md.v1.Tick")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("xy.md.v1.PriceLevel")))


def test_v1_consumer_decodes_v1plus_producer_and_counts_its_unknown_fields() -> None:
    TickPlus, _ = _v1plus_tick_classes()
    produced = TickPlus(venue="XNAS", symbol="AAPL", seq=7, last=1912500, region="us-east")
    produced.bids.add(price=1912400, size=100, orders=2, venue="XNAS")
    produced.bids.add(price=1912300, size=50, venue="ARCX")
    registry = CollectorRegistry()

    tick = decode(Tick, produced.SerializeToString(), where="subject xy.src.tick.XNAS.AAPL",
                  registry=registry)

    assert (tick.venue, tick.symbol, tick.seq, tick.last) == ("XNAS", "AAPL", 7, 1912500)
    assert [(b.price, b.size, b.orders) for b in tick.bids] == [(1912400, 100, 2),
                                                                (1912300, 50, 0)]
    assert registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"}) == 3
    # Passed on by a v1 relay, the newer fields reach a newer consumer unchanged.
    assert TickPlus.FromString(tick.SerializeToString()) == produced


def test_v1_producer_counts_no_unknown_fields() -> None:
    registry = CollectorRegistry()
    data = Tick(venue="XNAS", symbol="AAPL", seq=1, bids=[PriceLevel(price=1)]).SerializeToString()

    decode(Tick, data, where="test", registry=registry)

    assert not registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"})


def test_non_canonical_encoding_without_unknown_fields_counts_nothing() -> None:
    # A zero written explicitly (legal, not canonical) re-encodes shorter without being unknown.
    registry = CollectorRegistry()
    data = Tick(venue="X").SerializeToString() + b"\x18\x00"  # seq = 0, explicitly

    tick = decode(Tick, data, where="test", registry=registry)

    assert tick.venue == "X"
    assert not registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"})


@pytest.mark.parametrize("data, why", [
    (b"\x0a\x05AB", "length-delimited field longer than the payload"),
    (b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "varint longer than 10 bytes"),
    (b"\x07", "wire type 7 does not exist"),
    (b"\x00", "field number 0"),
])
def test_malformed_bytes_raise_contract_error_naming_type_source_and_cause(
        data: bytes, why: str) -> None:
    registry = CollectorRegistry()

    with pytest.raises(ContractError) as info:
        decode(Tick, data, where="subject xy.src.tick.XNAS.AAPL", registry=registry)

    text = str(info.value)
    assert text.startswith(f"subject xy.src.tick.XNAS.AAPL: {len(data)} bytes do not decode "
                           "as xy.md.v1.Tick (first bytes: "), why
    assert "protobuf: " in text
    assert info.value.code == "XY-CON-001"
    assert registry.get_sample_value("contract_decode_errors_total",
                                     {"message": "xy.md.v1.Tick"}) == 1


def test_malformed_nested_message_is_reported_against_the_outer_type() -> None:
    data = Delta(group="g").SerializeToString() + b"\x32\x03\x0a\x09x"  # symbols[0] truncated

    with pytest.raises(ContractError, match=r"^nats: 8 bytes do not decode as xy.md.v1.Delta"):
        decode(Delta, data, where="nats", registry=CollectorRegistry())


def test_module_default_counts_into_the_registry_given_to_use_registry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_contracts, "_default", None)
    registry = CollectorRegistry()
    TickPlus, _ = _v1plus_tick_classes()

    use_registry(registry)
    decode(Tick, TickPlus(region="eu").SerializeToString(), where="test")
    decode(Tick, TickPlus(region="us").SerializeToString(), where="test")

    assert registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"}) == 2
    # One decoder (and one set of counters) per registry, however often it is asked for.
    assert use_registry(registry) is _contracts.decoder_for(registry)


def test_empty_payload_is_the_default_message() -> None:
    assert decode(Tick, b"", where="test", registry=CollectorRegistry()) == Tick()


def test_a_hot_path_checks_the_first_message_and_every_nth_after_it() -> None:
    TickPlus, _ = _v1plus_tick_classes()
    newer = TickPlus(venue="XNAS", symbol="AAPL", seq=7, region="us-east").SerializeToString()
    decoder = _contracts.ContractDecoder(CollectorRegistry())

    ticks = [decoder.decode(Tick, newer, where="test", check_every=4) for _ in range(9)]

    # Messages 1, 5 and 9 were checked (one unknown field each); all nine keep the field.
    assert decoder.registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"}) == 3
    assert all(TickPlus.FromString(t.SerializeToString()).region == "us-east" for t in ticks)


def test_the_hot_decoder_samples_like_decode_and_reports_bad_payloads() -> None:
    TickPlus, _ = _v1plus_tick_classes()
    newer = TickPlus(venue="XNAS", symbol="AAPL", seq=7, region="us-east").SerializeToString()
    decoder = _contracts.ContractDecoder(CollectorRegistry())
    hot = decoder.hot(Tick, 4)

    ticks = [hot(newer, "test") for _ in range(9)]

    assert decoder.registry.get_sample_value(UNKNOWN, {"message": "xy.md.v1.Tick"}) == 3
    assert [t.seq for t in ticks] == [7] * 9
    assert all(TickPlus.FromString(t.SerializeToString()).region == "us-east" for t in ticks)
    with pytest.raises(ContractError, match=r"subject xy\.src\.tick\.X\.Y: 3 bytes do not decode"):
        hot(b"\x0a\x05a", "subject xy.src.tick.X.Y")
    assert decoder.registry.get_sample_value(
        "contract_decode_errors_total", {"message": "xy.md.v1.Tick"}) == 1
