"""Fixtures for the mixed-version tests: the gateway tests' keys (tests/gateway/gw_support.py)
and the contracts one version ahead and behind, generated once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from gw_support import keys
from proto_versions import generate


@pytest.fixture(scope="session")
def contract_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the generated ``xy.md.vnext`` / ``xy.md.vprev`` modules."""
    return generate(tmp_path_factory.mktemp("proto-versions"))


__all__ = ["keys"]
