"""Fixtures for the contract tests: the repository's buf and the contracts' descriptor image."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
from _contract_helpers import ROOT


@pytest.fixture(scope="session")
def buf() -> pathlib.Path:
    path = ROOT / "node_modules" / ".bin" / "buf"
    if not path.exists():
        pytest.fail("buf is not installed: run scripts/setup_contracts.sh (npm ci)")
    return path


@pytest.fixture(scope="session")
def image(buf: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The contracts as a FileDescriptorSet, built by buf from proto/."""
    out = tmp_path_factory.mktemp("image") / "image.binpb"
    subprocess.run([str(buf), "build", "--exclude-source-info", "-o", str(out)], cwd=ROOT,
                   check=True)
    return out.read_bytes()
