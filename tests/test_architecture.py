"""The shape rules of docs/architecture.md, enforced: no import circle between modules, types
instead of ``Any``, no god classes, one registry of error codes, one exception tree.

Read from the AST of ``xypipe/`` (generated protobuf code excluded), so a rule cannot drift
from what the code does.
"""

from __future__ import annotations

import ast
import pathlib
import re

import xypipe
from xypipe import _errors

PACKAGE = pathlib.Path(xypipe.__file__).parent
#: Lines mentioning ``Any`` before types carried the stage contract (289); the budget is 20 %.
ANY_BUDGET = 57
MAX_CLASS_LINES = 400


def _sources() -> dict[str, pathlib.Path]:
    out: dict[str, pathlib.Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.relative_to(PACKAGE).parts:
            continue
        parts = ("xypipe", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


SOURCES = _sources()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in SOURCES.items()}


def _imported(module: str, tree: ast.Module) -> set[str]:
    """Every xypipe module ``module`` imports, wherever the import statement is (top level,
    inside a function, under ``TYPE_CHECKING``): a circle hidden in a function is still one."""
    is_package = SOURCES[module].name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base_parts = base_parts[: len(base_parts) - drop]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    # The package's __init__ re-exports the public API; importing a submodule through it is
    # an import of that submodule, not of everything __init__ pulls in.
    return {m for m in out if m in SOURCES and m not in (module, "xypipe")}


def _cycles() -> list[list[str]]:
    graph = {name: _imported(name, tree) for name, tree in TREES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_modules() -> None:
    assert _cycles() == []


def test_any_stays_within_budget() -> None:
    per_file = {
        str(path.relative_to(PACKAGE)): sum(
            1 for line in path.read_text().splitlines() if re.search(r"\bAny\b", line))
        for path in SOURCES.values()
    }
    total = sum(per_file.values())
    worst = sorted(((n, f) for f, n in per_file.items() if n), reverse=True)[:5]
    assert total <= ANY_BUDGET, f"{total} lines mention Any (budget {ANY_BUDGET}); most: {worst}"


def test_no_class_is_a_god_object() -> None:
    big = [
        (node.end_lineno - node.lineno + 1, f"{name}.{node.name}")
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 >= MAX_CLASS_LINES
    ]
    assert big == []


_CODE = re.compile(r"XY-[A-Z]+-\d{3}")


def test_error_codes_are_defined_once_in_the_registry() -> None:
    """Call sites name codes through ``xypipe._errors`` (a class's ``code`` or a constant),
    never as a string literal of their own."""
    literals = [
        f"{SOURCES[name].relative_to(PACKAGE)}:{node.lineno}: {node.value}"
        for name, tree in TREES.items() if name != "xypipe._errors"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and _CODE.fullmatch(node.value)
    ]
    assert literals == []


def test_every_code_is_registered_once() -> None:
    tree = TREES["xypipe._errors"]
    seen: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _CODE.fullmatch(node.value):
            seen[node.value] = seen.get(node.value, 0) + 1
    # A class's code may be re-exported as a constant (``SUP_NOT_RESTARTED = ChildFailed.code``),
    # which is no second literal; two literals of one code are two definitions.
    assert [code for code, n in seen.items() if n > 1] == []


def test_every_exception_is_an_xy_error() -> None:
    """One exception tree: every exception class xypipe defines derives from ``XyError``."""
    import importlib
    outside = []
    for name in SOURCES:
        if name.endswith("__main__"):
            continue  # importing it runs the CLI
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) \
                    and obj.__module__ == name and not issubclass(obj, _errors.XyError):
                outside.append(f"{name}.{obj.__qualname__}")
    assert outside == []


def test_every_module_is_in_the_module_map() -> None:
    """docs/architecture.md names every module (its file, path or stage name in backticks), so
    a new maintainer finds where each concern lives."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = []
    for path in SOURCES.values():
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py":
            continue
        names = {path.name, path.stem, str(rel)}
        if not any(f"`{n}`" in doc for n in names):
            missing.append(str(rel))
    assert missing == []
