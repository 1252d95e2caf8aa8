"""The stale-code check (`scripts/gen_proto.py --check`): fresh now, and it notices an edit."""

from __future__ import annotations

import pathlib
import shutil

import pytest
from _contract_helpers import ROOT, load_script


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Every generated output, generated anew from proto/ in a scratch workspace."""
    gen_proto = load_script("gen_proto")
    ws = gen_proto._workspace(tmp_path_factory.mktemp("gen"))
    gen_proto.generate(ws)
    return ws


def test_committed_generated_code_is_up_to_date(fresh: pathlib.Path) -> None:
    assert load_script("gen_proto").compare(fresh) == []


def test_stale_check_names_every_edited_missing_and_extra_file(
        fresh: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen_proto = load_script("gen_proto")
    for out in gen_proto.OUTPUTS:
        shutil.copytree(ROOT / out, tmp_path / out, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = tmp_path / "ui-static/gen/xy_contracts.js"
    bundle.write_text(bundle.read_text().replace("TickSchema", "TickSchemaX", 1))
    (tmp_path / "proto/testdata/tick.trade.binpb").unlink()
    ts = tmp_path / "contracts/ts/xy/md/v1/tick_pb.ts"
    ts.write_text(ts.read_text().replace("price: bigint;", "price: number;", 1))
    (tmp_path / "contracts/go/xy/md/v1/old.pb.go").write_text("package mdv1\n")
    monkeypatch.setattr(gen_proto, "ROOT", tmp_path)

    problems = gen_proto.compare(fresh)

    assert len(problems) == 4, problems
    edited = next(p for p in problems if p.startswith("differs: ui-static/"))
    assert edited.startswith("differs: ui-static/gen/xy_contracts.js\n")
    assert "TickSchemaX" in edited
    typescript = next(p for p in problems if p.startswith("differs: contracts/ts/"))
    assert typescript.startswith("differs: contracts/ts/xy/md/v1/tick_pb.ts\n")
    assert "price: number;" in typescript
    assert "missing (not generated/committed): proto/testdata/tick.trade.binpb" in problems
    assert ("stale extra file (no longer generated): contracts/go/xy/md/v1/old.pb.go"
            in problems)
