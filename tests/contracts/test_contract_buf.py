"""buf lint and the append-only (FILE) breaking check: proof that the check bites.

Each case edits a scratch copy of proto/ and runs `buf breaking` against an image of the
unedited protos, exactly as scripts/test_contracts.sh runs it against the committed baseline.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest
from _contract_helpers import ROOT

TICK = "xy/md/v1/tick.proto"
WS = "xy/md/v1/ws.proto"


def _run(cmd: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def scratch(buf: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the module (buf.yaml + proto/) plus ``against.binpb``, an image of it as is."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto",
                    ignore=shutil.ignore_patterns("testdata", "*.binpb"))
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    built = _run([str(buf), "build", "-o", "against.binpb"], tmp_path)
    assert built.returncode == 0, built.stderr
    return tmp_path


def _edit(root: pathlib.Path, file: str, old: str, new: str) -> None:
    path = root / "proto" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {file}"
    path.write_text(text.replace(old, new))


def _breaking(buf: pathlib.Path, root: pathlib.Path) -> tuple[int, list[dict[str, str]]]:
    proc = _run([str(buf), "breaking", "--against", "against.binpb", "--error-format=json"], root)
    findings = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, findings


def test_buf_lint_passes_on_the_contracts(buf: pathlib.Path) -> None:
    proc = _run([str(buf), "lint"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_contracts_are_append_only_against_the_committed_baseline(buf: pathlib.Path) -> None:
    proc = _run([str(buf), "breaking", "--against", "proto/baseline.binpb"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


BREAKING = [
    pytest.param(TICK, "  string source = 13;\n", "", "FIELD_NO_DELETE", id="field-removed"),
    pytest.param(TICK, "uint64 seq = 3 [", "uint64 seq = 15 [", "FIELD_NO_DELETE",
                 id="field-renumbered"),
    pytest.param(TICK, "int64 vol = 10 [jstype = JS_NUMBER];", "string vol = 10;",
                 "FIELD_SAME_TYPE", id="field-retyped"),
    pytest.param(TICK, "sint64 last = 6 [", "int64 last = 6 [", "FIELD_SAME_TYPE",
                 id="field-retyped-same-wire-type"),
    pytest.param(TICK, "  TICK_FLAG_STALE = 8;\n", "", "ENUM_VALUE_NO_DELETE",
                 id="enum-value-removed"),
    pytest.param(TICK, "  string venue = 1;\n  string symbol = 2;\n  // Per",
                 "  string exchange = 1;\n  string symbol = 2;\n  // Per", "FIELD_SAME_NAME",
                 id="field-renamed"),
    pytest.param(WS, "  string reason = 2;\n  // What must",
                 '  reserved 2;\n  reserved "reason";\n  // What must',
                 "FIELD_NO_DELETE", id="field-removed-even-with-reserved-number-and-name"),
]


@pytest.mark.parametrize(("file", "old", "new", "rule"), BREAKING)
def test_buf_breaking_refuses_incompatible_change(
        buf: pathlib.Path, scratch: pathlib.Path, file: str, old: str, new: str,
        rule: str) -> None:
    _edit(scratch, file, old, new)

    code, findings = _breaking(buf, scratch)

    assert code != 0, "buf breaking accepted an incompatible change"
    assert rule in {f["type"] for f in findings}, findings


def test_buf_breaking_and_lint_accept_additive_change(
        buf: pathlib.Path, scratch: pathlib.Path) -> None:
    _edit(scratch, TICK, "  uint32 price_decimals = 14;\n}",
          "  uint32 price_decimals = 14;\n  // Added later.\n  string region = 15;\n}")
    _edit(scratch, TICK, "  TICK_FLAG_STALE = 8;\n",
          "  TICK_FLAG_STALE = 8;\n  TICK_FLAG_ODD_LOT = 16;\n")
    _edit(scratch, WS, "  GoAway go_away = 9;\n}",
          "  GoAway go_away = 9;\n  Notice notice = 10;\n}\n\n"
          "message Notice {\n  string text = 1;\n}")

    code, findings = _breaking(buf, scratch)
    assert (code, findings) == (0, [])
    lint = _run([str(buf), "lint"], scratch)
    assert lint.returncode == 0, lint.stdout + lint.stderr
