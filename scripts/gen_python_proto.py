"""Generate the Python contract modules from proto/ into xypipe/_proto/.

protoc (from grpcio-tools, so the generated code matches the pinned protobuf runtime) writes
absolute imports (``from xy.md.v1 import tick_pb2``); we rewrite them to live under
``xypipe._proto`` so the generated code never claims a top-level ``xy`` package.

Usually run through ``scripts/gen_proto.py`` (``make proto``), which regenerates every language.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Write the ``xypipe._proto`` package for every .proto under ``proto_dir`` to ``out_dir``."""
    sources = sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I.",
               f"--python_out={tmp}", f"--pyi_out={tmp}", *sources]
        subprocess.run(cmd, check=True, cwd=proto_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(tmp, out_dir)
    for path in sorted(out_dir.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            text = path.read_text()
            text = re.sub(r"^from xy\.", "from xypipe._proto.xy.", text, flags=re.M)
            text = re.sub(r"^import xy\.", "import xypipe._proto.xy.", text, flags=re.M)
            path.write_text(text)
    for d in [out_dir, *sorted(p for p in out_dir.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=pathlib.Path, default=ROOT / "proto")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "xypipe" / "_proto")
    args = parser.parse_args(argv)
    generate(args.proto.resolve(), args.out.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
