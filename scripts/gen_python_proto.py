"""Generate the Python contract modules from proto/ into xypipe/_proto/.

protoc writes absolute imports (``from xy.md.v1 import tick_pb2``); we rewrite them to live
under ``xypipe._proto`` so the generated code never claims a top-level ``xy`` package.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "xypipe" / "_proto"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}",
               f"--python_out={tmp}", f"--pyi_out={tmp}", *sources]
        subprocess.run(cmd, check=True, cwd=PROTO)
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(tmp, OUT)
    for path in OUT.rglob("*"):
        if path.suffix in {".py", ".pyi"}:
            text = path.read_text()
            text = re.sub(r"^from xy\.", "from xypipe._proto.xy.", text, flags=re.M)
            text = re.sub(r"^import xy\.", "import xypipe._proto.xy.", text, flags=re.M)
            path.write_text(text)
    for d in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
