"""Helpers shared by the contract tests (imported by name: pytest puts this directory first)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "proto" / "testdata"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/NAME.py`` once (the generators are scripts, not part of the package)."""
    if name in sys.modules:
        return sys.modules[name]
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
