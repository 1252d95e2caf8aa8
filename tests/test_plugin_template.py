"""The plugin template in ``stages/`` works outside this repository: copied and renamed as
``stages/README.md`` says, its own tests pass with its own pytest settings, and it imports only
xypipe's public modules."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "stages" / "xypipe-examples"
PUBLIC = {"xypipe", "xypipe.abc", "xypipe.testing"}


def copy_as(name: str, dest: pathlib.Path) -> pathlib.Path:
    """The template copied to ``dest`` as distribution ``name`` (module ``name`` with
    underscores): what a plugin author starts from."""
    module = name.replace("-", "_")
    out = dest / name
    shutil.copytree(TEMPLATE, out, ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", ".pytest_cache", "build"))
    (out / "xypipe_examples").rename(out / module)
    for path in out.rglob("*"):
        if path.suffix in (".py", ".toml"):
            text = path.read_text()
            path.write_text(text.replace("xypipe_examples", module)
                            .replace("xypipe-examples", name))
    return out


def test_the_template_copied_out_of_the_repository_passes_its_own_tests(tmp_path):
    plugin = copy_as("acme-stages", tmp_path)
    assert not (plugin / "xypipe_examples").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(plugin)  # instead of `pip install -e .` (the same import path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(plugin)],
        cwd=plugin, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Its own settings, not this repository's: rootdir and config file are the copy's.
    assert f"rootdir: {plugin}" in done.stdout
    assert "configfile: pyproject.toml" in done.stdout
    assert "4 passed" in done.stdout.splitlines()[-1]


def test_the_template_imports_only_public_modules():
    imported: dict[str, set[str]] = {}
    for path in TEMPLATE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] == "xypipe":
                    imported.setdefault(name, set()).add(path.relative_to(TEMPLATE).as_posix())
    assert set(imported) == PUBLIC, imported
