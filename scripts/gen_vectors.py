"""Golden vectors for the wire contracts: ``proto/testdata/``.

Every message type gets a ``*.full`` vector with every field set (values derived from the field
number and type, so a new field is covered the day it is added), plus hand-written realistic
messages and unknown-field cases. The unknown-field cases are produced by a "v1+" producer: the
same schema with extra fields (built here from the v1 descriptors, in a separate pool), so the
bytes carry field numbers a v1 reader does not know.

Output per vector: ``NAME.binpb`` (deterministic binary: fields in number order, map entries
sorted by key, unknown fields last) and ``NAME.json`` (protobuf canonical JSON of what a v1
reader sees). ``vectors.json`` lists them with the message type and how many unknown fields a
v1 reader must keep. Everything is a pure function of the descriptors: regenerating is
byte-identical, which ``scripts/gen_proto.py --check`` verifies.

Canonical map order is ascending by key (what Go, C++ and protobuf-es write). The upb backend
of the Python runtime writes integer-keyed maps in descending order even when asked to be
deterministic, so the generator runs on the pure-Python backend, which sorts ascending: run it
as ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python gen_vectors.py IMAGE OUT_DIR`` (an image from
``buf build -o IMAGE``); ``scripts/gen_proto.py`` does exactly that.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from xypipe._contracts import count_unknown_fields

PACKAGE = "xy.md.v1"
# Largest integer a JavaScript number holds exactly; the 64-bit fields use jstype = JS_NUMBER.
MAX_SAFE = 2**53 - 1

# The hand-written vectors, in canonical JSON form (what ParseDict accepts).
REALISTIC: list[tuple[str, str, dict[str, Any]]] = [
    ("tick.trade", "Tick", {
        "venue": "XNAS", "symbol": "AAPL", "seq": "1042", "tsExchangeUs": "1735689600123456",
        "tsArrivalUs": "1735689600123789", "last": "1912550", "lastSize": "300",
        "bids": [{"price": "1912500", "size": "1200", "orders": 4},
                 {"price": "1912400", "size": "800", "orders": 2}],
        "asks": [{"price": "1912600", "size": "500", "orders": 1}],
        "vol": "18234001", "oi": "0", "flags": 1, "source": "demo-publisher/1",
        "priceDecimals": 4,
    }),
    ("tick.extremes", "Tick", {
        "venue": "X", "symbol": "S", "seq": str(MAX_SAFE), "tsExchangeUs": str(-MAX_SAFE),
        "tsArrivalUs": "1", "last": "-1", "lastSize": str(MAX_SAFE), "vol": str(MAX_SAFE),
        "oi": str(-MAX_SAFE), "flags": 4294967295, "priceDecimals": 4294967295,
        "bids": [{"price": str(-MAX_SAFE), "size": "-1", "orders": 4294967295}],
    }),
    ("tick.empty", "Tick", {}),
    ("delta.two_symbols", "Delta", {
        "group": "us-tech", "shard": 3, "seq": "77", "epoch": "1735689000", "tsEmitUs":
        "1735689600200000", "level": 0, "windowMs": 33, "symbols": [
            {"venue": "XNAS", "symbol": "AAPL", "seq": "1042", "last": "1912550",
             "bids": [{"price": "1912500", "size": "1200", "orders": 4}],
             "windowHigh": "1912600", "windowLow": "1912500", "windowTrades": 2,
             "windowVolume": "600", "windowTicks": 5, "totalTrades": "9001",
             "checksum": 3735928559, "priceDecimals": 4},
            {"venue": "XNAS", "symbol": "MSFT", "seq": "88", "last": "4203300", "trimmed": True,
             "priceDecimals": 4},
        ],
    }),
    ("snapshot.group", "Snapshot", {
        "group": "us-tech", "version": "12", "epoch": "1735689000",
        "shardSeq": {"0": "70", "1": "71", "2": "0", "3": "77"}, "shards": 4,
        "tsEmitUs": "1735689602000000", "topBy": "vol", "windowMs": 33,
        "symbols": [{"venue": "XNAS", "symbol": "AAPL", "seq": "1042", "last": "1912550"}],
        "top": [{"venue": "XNAS", "symbol": "AAPL", "value": "18234001"},
                {"venue": "XNAS", "symbol": "MSFT", "value": "-12"}],
        "sourceStreamSeq": "555123",
    }),
    ("server_frame.deltas", "ServerFrame", {
        "deltas": [{"group": "us-tech", "shard": 0, "seq": "5", "epoch": "1"},
                   {"group": "us-tech", "shard": 1, "seq": "9", "epoch": "1", "firstSeq": "7"}],
        "tsSendUs": "1735689600250000",
    }),
    ("server_frame.welcome", "ServerFrame", {
        "welcome": {"sessionId": "s-1", "protocolVersion": 1, "serverTimeUs": "1735689600000000",
                    "heartbeatMs": 15000, "tokenExpiresUs": "1735690500000000",
                    "principal": "alice", "allowed": ["xy.md.tick.us-tech.>"]},
    }),
    ("server_frame.error", "ServerFrame", {
        "error": {"code": "ERROR_CODE_AUTH_EXPIRED", "message": "token expired", "refId": 7,
                  "fatal": True},
    }),
    ("server_frame.go_away", "ServerFrame", {
        "goAway": {"retryMs": 250, "reason": "draining: SIGTERM", "closeInMs": 2000},
        "tsSendUs": "1735689600300000",
    }),
    ("client_frame.hello", "ClientFrame", {
        "id": 1, "hello": {"token": "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "protocolVersion": 1,
                           "client": "xy-worker/0.1 (SharedWorker)"},
    }),
    ("client_frame.resume", "ClientFrame", {
        "id": 2, "resume": {"points": [{"group": "us-tech", "shard": 0, "epoch": "1", "seq": "5"},
                                       {"group": "us-tech", "shard": 1, "epoch": "1",
                                        "seq": "9"}]},
    }),
    ("client_frame.metrics", "ClientFrame", {
        "id": 3, "metrics": {"renderLatencyMs": [4.5, 12.25, 0.125], "tabs": 2, "fps": 59.5,
                             "droppedBatches": 1},
    }),
    ("health_report.ready", "HealthReport", {
        "service": "gateway", "instance": "gw-1", "live": True, "ready": True,
        "checks": {"jwt": "ok", "nats": "ok", "snapshots": "warming"}, "tsUs": "1735689600000000",
    }),
]

# The "v1+" producer: fields a newer schema adds, numbered past every v1 field of the message.
# (message, number, name, type, label, type_name)
_LABEL_OPTIONAL = FieldDescriptor.LABEL_OPTIONAL
_LABEL_REPEATED = FieldDescriptor.LABEL_REPEATED
EXTRA_FIELDS: list[tuple[str, int, str, int, int, str]] = [
    ("Tick", 15, "region", FieldDescriptor.TYPE_STRING, _LABEL_OPTIONAL, ""),
    ("Tick", 16, "ts_gps_ns", FieldDescriptor.TYPE_FIXED64, _LABEL_OPTIONAL, ""),
    ("Tick", 17, "lot_multiplier", FieldDescriptor.TYPE_FIXED32, _LABEL_OPTIONAL, ""),
    ("Tick", 18, "venue_flags", FieldDescriptor.TYPE_SINT32, _LABEL_REPEATED, ""),
    ("Tick", 19, "ts_gateway_us", FieldDescriptor.TYPE_UINT64, _LABEL_OPTIONAL, ""),
    ("SymbolState", 22, "vwap", FieldDescriptor.TYPE_SINT64, _LABEL_OPTIONAL, ""),
    ("Snapshot", 13, "note", FieldDescriptor.TYPE_STRING, _LABEL_OPTIONAL, ""),
    ("ServerFrame", 10, "notice", FieldDescriptor.TYPE_MESSAGE, _LABEL_OPTIONAL,
     f".{PACKAGE}.Notice"),
    ("ClientFrame", 10, "ack", FieldDescriptor.TYPE_MESSAGE, _LABEL_OPTIONAL,
     f".{PACKAGE}.Notice"),
]

UNKNOWN_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("tick.unknown_fields", "Tick", {
        "venue": "XNAS", "symbol": "AAPL", "seq": "1043", "last": "1912600", "priceDecimals": 4,
        "region": "us-east", "tsGpsNs": "1735689600123456789", "lotMultiplier": 100,
        "venueFlags": [-1, 2, -3], "tsGatewayUs": "1735689600123999",
    }),
    ("delta.nested_unknown", "Delta", {
        "group": "us-tech", "shard": 0, "seq": "6", "epoch": "1",
        "symbols": [{"venue": "XNAS", "symbol": "AAPL", "last": "1912600", "vwap": "1912555"},
                    {"venue": "XNAS", "symbol": "MSFT", "last": "4203300", "vwap": "-4"}],
    }),
    ("snapshot.unknown_fields", "Snapshot", {
        "group": "us-tech", "version": "13", "shardSeq": {"0": "80", "7": "3"},
        "note": "rebuilt from stream",
        "symbols": [{"venue": "XNAS", "symbol": "AAPL", "vwap": "1"}],
    }),
    ("server_frame.unknown_fields", "ServerFrame", {
        "deltas": [{"group": "us-tech", "seq": "6", "epoch": "1",
                    "symbols": [{"symbol": "AAPL", "vwap": "10"}]}],
        "tsSendUs": "1735689600260000",
        "notice": {"text": "maintenance at 22:00 UTC", "severity": 2},
    }),
    ("client_frame.unknown_fields", "ClientFrame", {
        "id": 9, "ping": {"tsUs": "1735689600000000", "nonce": "42"},
        "ack": {"text": "v1+ client", "severity": 1},
    }),
    ("contract.unknown_enum_value", "Contract", {
        "venue": "XNAS", "symbol": "AAPL", "group": "us-tech", "priority": 7, "version": "3",
    }),
    ("server_frame.unknown_enum_value", "ServerFrame", {
        "error": {"code": 99, "message": "from a newer gateway"},
    }),
]


def load_pool(image: bytes) -> descriptor_pool.DescriptorPool:
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool


def v1plus_pool(image: bytes) -> descriptor_pool.DescriptorPool:
    """The v1 schema plus EXTRA_FIELDS and a ``Notice`` message: a newer producer's view."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    by_message = {m.name: (f, m) for f in fds.file if f.package == PACKAGE for m in f.message_type}
    ws_file = by_message["ServerFrame"][0]
    notice = ws_file.message_type.add(name="Notice")
    notice.field.add(name="text", number=1, type=FieldDescriptor.TYPE_STRING,
                     label=_LABEL_OPTIONAL, json_name="text")
    notice.field.add(name="severity", number=2, type=FieldDescriptor.TYPE_UINT32,
                     label=_LABEL_OPTIONAL, json_name="severity")
    for message, number, name, ftype, label, type_name in EXTRA_FIELDS:
        _, m = by_message[message]
        assert all(f.number < number for f in m.field), (message, number)
        field = m.field.add(name=name, number=number, type=ftype, label=label,
                            json_name=_camel(name))
        if type_name:
            field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def message_types(pool: descriptor_pool.DescriptorPool, image: bytes) -> list[Descriptor]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    out: list[Descriptor] = []
    for f in fds.file:
        if f.package != PACKAGE:
            continue
        for m in f.message_type:
            out.append(pool.FindMessageTypeByName(f"{PACKAGE}.{m.name}"))
    return out


def _scalar(field: FieldDescriptor, seed: int) -> Any:
    n = field.number
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{seed}"
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes([n, seed, 0, 255])
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return n + seed / 4
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return 4_000_000_000 + n * 10 + seed
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return 2**52 + n * 10 + seed
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
             FieldDescriptor.TYPE_SFIXED32):
        return -(2_000_000_000 + n * 10 + seed)
    # int64 / sint64 / sfixed64: negative, so the 10-byte varint and zigzag paths are exercised.
    return -(2**52 + n * 10 + seed)


def fill(msg: Message, *, seed: int = 1, depth: int = 0) -> None:
    """Set every field of ``msg`` (two entries for repeated and map fields), recursively."""
    for field in msg.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], \
                field.message_type.fields_by_name["value"]
            target = getattr(msg, field.name)
            for i in (1, 2):
                key = _scalar(key_f, seed + i)
                if val_f.message_type is not None:
                    fill(target[key], seed=seed + i, depth=depth + 1)
                else:
                    target[key] = _scalar(val_f, seed + i)
        elif field.message_type is not None:
            if depth >= 3:
                continue
            if field.is_repeated:
                for i in (1, 2):
                    fill(getattr(msg, field.name).add(), seed=seed + i, depth=depth + 1)
            else:
                fill(getattr(msg, field.name), seed=seed, depth=depth + 1)
        elif field.is_repeated:
            getattr(msg, field.name).extend(_scalar(field, seed + i) for i in (1, 2))
        else:
            setattr(msg, field.name, _scalar(field, seed))


def canonical_json(msg: Message) -> str:
    return json.dumps(json_format.MessageToDict(msg), indent=2, sort_keys=True) + "\n"


def build(image: bytes) -> dict[str, bytes]:
    """Every vector file (name -> content) for the schema in ``image`` (a FileDescriptorSet)."""
    pool = load_pool(image)
    plus = v1plus_pool(image)
    files: dict[str, bytes] = {}
    manifest: list[dict[str, Any]] = []

    def emit(name: str, full_name: str, data: bytes) -> None:
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
        v1 = cls.FromString(data)
        files[f"{name}.binpb"] = data
        files[f"{name}.json"] = canonical_json(v1).encode()
        manifest.append({"name": name, "message": full_name, "binary": f"{name}.binpb",
                         "json": f"{name}.json", "unknown_fields": count_unknown_fields(v1)})

    for desc in message_types(pool, image):
        msg = message_factory.GetMessageClass(desc)()
        fill(msg)
        emit(f"{_snake(desc.name)}.full", desc.full_name,
             msg.SerializeToString(deterministic=True))
    for name, short, as_json in REALISTIC:
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{short}"))
        emit(name, f"{PACKAGE}.{short}",
             json_format.ParseDict(as_json, cls()).SerializeToString(deterministic=True))
    for name, short, as_json in UNKNOWN_CASES:
        cls = message_factory.GetMessageClass(plus.FindMessageTypeByName(f"{PACKAGE}.{short}"))
        emit(name, f"{PACKAGE}.{short}",
             json_format.ParseDict(as_json, cls()).SerializeToString(deterministic=True))

    manifest.sort(key=lambda v: v["name"])
    files["vectors.json"] = (json.dumps({"package": PACKAGE, "vectors": manifest}, indent=2)
                             + "\n").encode()
    return files


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


def write(image: bytes, out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.iterdir():
        if old.is_file():
            old.unlink()
    for name, content in sorted(build(image).items()):
        (out_dir / name).write_bytes(content)


if __name__ == "__main__":
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python":
        raise SystemExit("gen_vectors: set PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "
                         "(canonical ascending map order)")
    write(pathlib.Path(sys.argv[1]).read_bytes(), pathlib.Path(sys.argv[2]))
