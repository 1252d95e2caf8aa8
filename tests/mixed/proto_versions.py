"""The contracts one version ahead and one behind, generated from ``proto/`` at test time.

Nothing generated is committed, so nothing can drift: both are the current
``xy/md/v1/{tick,marketdata}.proto`` rewritten, then compiled by the protoc the project's own
generator uses (grpcio-tools, ``scripts/gen_python_proto.py``):

* ``xy.md.vnext`` — a newer producer: ``SymbolState``, ``Delta`` and ``Snapshot`` each get an
  appended field ``producer_note`` (string) numbered one past the current highest, as the
  contract rules allow (docs/contracts.md, "Evolving the contracts").
* ``xy.md.vprev`` — an older producer: ``Delta`` and ``Snapshot`` without ``fence``, the field
  the scale-out added (readers must take its absence as 0, "no lease").

The packages differ from ``xy.md.v1`` so all three live in one descriptor pool; the wire format
knows field numbers only, which is what a mixed fleet shares.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from xypipe.contracts import Delta, Snapshot, SymbolState

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("tick.proto", "marketdata.proto")
NOTE = "producer_note"


def _next_number(message: type[Delta] | type[Snapshot] | type[SymbolState]) -> int:
    return max(f.number for f in message.DESCRIPTOR.fields) + 1


def _append_field(text: str, message: str, line: str) -> str:
    head = re.search(rf"^message {message} \{{$", text, flags=re.M)
    assert head is not None, f"message {message} not found in marketdata.proto"
    end = text.index("\n}", head.end())
    return text[:end] + f"\n  {line}" + text[end:]


def _drop_field(text: str, message: str, field: str) -> str:
    head = re.search(rf"^message {message} \{{$", text, flags=re.M)
    assert head is not None
    end = text.index("\n}", head.end())
    body, n = re.subn(rf"^  uint64 {field} = \d+[^\n]*\n", "", text[head.end():end] + "\n",
                      flags=re.M)
    assert n == 1, f"{message}.{field} not found"
    return text[:head.end()] + body.rstrip("\n") + text[end:]


def _rewrite(name: str, text: str, version: str) -> str:
    text = text.replace("package xy.md.v1;", f"package xy.md.{version};")
    text = text.replace('import "xy/md/v1/', f'import "xy/md/{version}/')
    text = re.sub(r"^option go_package.*\n", "", text, flags=re.M)
    if name != "marketdata.proto":
        return text
    if version == "vnext":
        for message in (SymbolState, Delta, Snapshot):
            text = _append_field(text, message.DESCRIPTOR.name,
                                 f"string {NOTE} = {_next_number(message)};")
    else:
        text = _drop_field(text, "Delta", "fence")
        text = _drop_field(text, "Snapshot", "fence")
    return text


def generate(out: Path) -> Path:
    """Write ``xy/md/{vnext,vprev}`` (proto sources and Python modules) under ``out``; the
    directory to put on ``sys.path`` / ``PYTHONPATH``."""
    src, py = out / "proto", out / "py"
    for version in ("vnext", "vprev"):
        d = src / "xy" / "md" / version
        d.mkdir(parents=True, exist_ok=True)
        for name in SOURCES:
            text = (ROOT / "proto" / "xy" / "md" / "v1" / name).read_text()
            (d / name).write_text(_rewrite(name, text, version))
    py.mkdir(parents=True, exist_ok=True)
    protos = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={py}",
                    *protos], check=True, cwd=src)
    for d in [py / "xy", py / "xy" / "md", py / "xy" / "md" / "vnext", py / "xy" / "md" / "vprev"]:
        (d / "__init__.py").touch()
    return py


def load(py: Path, version: str) -> ModuleType:
    """The generated ``marketdata_pb2`` of ``version`` (``vnext`` / ``vprev``)."""
    if str(py) not in sys.path:
        sys.path.insert(0, str(py))
    return importlib.import_module(f"xy.md.{version}.marketdata_pb2")
