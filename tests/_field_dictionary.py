"""What the field dictionary documents, and what the code registers and labels, read statically.

Used by ``tests/test_field_dictionary.py``. The dictionary side parses the metric tables of
``docs/observability/field-dictionary.md``; the code side walks the AST of every module under
``xypipe/`` for metric registrations (``Metrics.counter/gauge/histogram/rate``, prometheus-client
constructors) and for the ``.labels(...)`` calls on them, so the test needs no list of its own.

The labels column of a metric row has one grammar (documented at the top of the dictionary):
label specs separated by ``;``, each ``\u0060name\u0060`` alone (values free: names from the
configuration or the data, e.g. a group) or ``\u0060name\u0060 = \u0060v1\u0060, \u0060v2\u0060``
(enumerated; ``{placeholder}`` in a value matches any text) or ``\u0060name\u0060 = values of
\u0060module.Enum\u0060`` / ``names of \u0060module.Enum\u0060`` (the code's own enumeration).
Text in parentheses explains and is ignored.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import re
from collections.abc import Iterator

import attrs

ROOT = pathlib.Path(__file__).resolve().parent.parent
DICTIONARY = ROOT / "docs" / "observability" / "field-dictionary.md"
PACKAGE = ROOT / "xypipe"

KINDS = ("counter", "gauge", "histogram")


def family_name(name: str, kind: str) -> str:
    """The family name prometheus-client gives a metric (counters lose ``_total``)."""
    return name.removesuffix("_total") if kind == "counter" else name


# --------------------------------------------------------------------------- the dictionary


@attrs.frozen
class LabelDoc:
    name: str
    #: None: free values. Else the exact values, and the patterns (regexes) for ``{...}`` ones.
    values: frozenset[str] | None = None
    patterns: tuple[str, ...] = ()
    #: ``module.Enum`` named as the source, and whether its values or its names are used.
    source: str | None = None
    source_attr: str = "value"

    def source_values(self) -> frozenset[str]:
        assert self.source is not None
        module, _, name = self.source.rpartition(".")
        enum_like = getattr(importlib.import_module(module), name)
        if self.source_attr == "name" and hasattr(enum_like, "keys"):  # a protobuf enum
            return frozenset(str(k) for k in enum_like.keys())
        return frozenset(str(getattr(m, self.source_attr)) for m in enum_like)

    def allowed(self) -> tuple[frozenset[str], tuple[str, ...]] | None:
        if self.source is not None:
            return self.source_values(), ()
        if self.values is None:
            return None
        return self.values, self.patterns

    def accepts(self, value: str) -> bool:
        allowed = self.allowed()
        if allowed is None:
            return True
        exact, patterns = allowed
        return value in exact or any(re.fullmatch(p, value) for p in patterns)


@attrs.frozen
class MetricDoc:
    name: str  # as written (with _total)
    family: str
    kind: str
    labels: dict[str, LabelDoc]
    section: str
    line: int


_TICKED = re.compile(r"`([^`]+)`")


def _strip_parens(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _pattern(value: str) -> str:
    return "".join(".+" if part.startswith("{") else re.escape(part)
                   for part in re.split(r"(\{[^}]*\})", value) if part)


def parse_labels(cell: str, where: str) -> dict[str, LabelDoc]:
    """One labels cell; raises ValueError naming the row for text outside the grammar."""
    text = _strip_parens(cell).strip()
    if text in ("—", "-", ""):
        return {}
    if "…" in cell or "..." in cell:
        raise ValueError(f"{where}: an open list of label values ({cell!r}): enumerate them, "
                         "or name the code's enumeration (`= values of `module.Enum``)")
    out: dict[str, LabelDoc] = {}
    for spec in text.split(";"):
        left, eq, right = spec.partition("=")
        names = _TICKED.findall(left)
        if not names:
            raise ValueError(f"{where}: no label name in {spec.strip()!r}")
        for free in names[:-1] if eq else names:
            out[free] = LabelDoc(free)
        if not eq:
            continue
        label = names[-1]
        source = re.fullmatch(r"\s*(values|names) of `([\w.]+)`\s*", right)
        if source:
            out[label] = LabelDoc(label, source=source.group(2),
                                  source_attr=source.group(1)[:-1])
            continue
        values = _TICKED.findall(right)
        if not values or _TICKED.sub("", right).replace(",", "").strip():
            raise ValueError(f"{where}: label {label!r}: expected `value`, `value`, ... "
                             f"after '=', got {right.strip()!r}")
        exact = frozenset(v for v in values if "{" not in v)
        patterns = tuple(_pattern(v) for v in values if "{" in v)
        out[label] = LabelDoc(label, exact, patterns)
    return out


def parse_dictionary(path: pathlib.Path = DICTIONARY) -> tuple[list[MetricDoc], list[str]]:
    """Every metric row (in order) and the problems met reading them."""
    rows: list[MetricDoc] = []
    problems: list[str] = []
    section = ""
    in_metrics = False
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            in_metrics = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == ["metric", "type", "labels"]:
            in_metrics = True
            continue
        if not in_metrics or set(cells[0]) <= {"-"}:
            continue
        where = f"{path.name}:{lineno}"
        names = _TICKED.findall(cells[0])
        kind = cells[1].strip()
        if not names or kind not in KINDS:
            problems.append(f"{where}: expected `metric` and one of {KINDS}, got {cells[:2]}")
            continue
        try:
            labels = parse_labels(cells[2], where)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        rows.append(MetricDoc(names[0], family_name(names[0], kind), kind, labels, section,
                              lineno))
    return rows, problems


_CODE = re.compile(r"\bXY-[A-Z]+-\d{3}\b")


def documented_codes(path: pathlib.Path = DICTIONARY) -> dict[str, str]:
    """Error code -> the section heading of the table row that documents it."""
    out: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("Browser-side codes"):
            section = "browser"
        m = re.match(r"\|\s*`(XY-[A-Z]+-\d{3})`\s*\|", line)
        if m:
            out[m.group(1)] = section
    return out


def codes_in(paths: list[pathlib.Path]) -> dict[str, str]:
    """Error codes written in source files -> the first file that has each."""
    out: dict[str, str] = {}
    for p in paths:
        for code in _CODE.findall(p.read_text()):
            out.setdefault(code, str(p.relative_to(ROOT)))
    return out


# --------------------------------------------------------------------------- the code


@attrs.frozen
class Registration:
    family: str
    kind: str
    labels: tuple[str, ...]
    where: str  # file:line
    binding: str | None  # the variable/attribute it is assigned to, if any


@attrs.define
class LabelUse:
    """What one ``.labels(...)`` call site passes for one label."""

    literals: set[str] = attrs.field(factory=set)
    patterns: set[str] = attrs.field(factory=set)
    computed: list[str] = attrs.field(factory=list)  # file:line of values the scan cannot read


def _modules() -> Iterator[tuple[pathlib.Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.parts:
            continue  # generated code
        yield path, ast.parse(path.read_text(), str(path))


def _str_constants(trees: list[tuple[pathlib.Path, ast.Module]]) -> dict[str, str]:
    """Module-level ``NAME = "text"`` of every module (names are unique enough to join)."""
    out: dict[str, str] = {}
    for _, tree in trees:
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        out[t.id] = node.value.value
    return out


def _binding(parents: dict[ast.AST, ast.AST], call: ast.AST) -> str | None:
    node = parents.get(call)
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        t = node.targets[0]
        if isinstance(t, ast.Name):
            return t.id
        if isinstance(t, ast.Attribute):
            return t.attr
    if isinstance(node, ast.Return):
        fn = parents.get(node)
        while fn is not None and not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            fn = parents.get(fn)
        return f"{fn.name}()" if fn is not None else None
    return None


def _receiver_name(expr: ast.AST) -> str | None:
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Call):
        return f"{_receiver_name(expr.func)}()"
    return None


class CodeScan:
    """Registrations and label call sites of every metric in ``xypipe/``."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.problems: list[str] = []
        #: family -> label -> what call sites pass
        self.uses: dict[str, dict[str, LabelUse]] = {}
        trees = list(_modules())
        self._consts = _str_constants(trees)
        for path, tree in trees:
            self._scan_registrations(path, tree)
        for path, tree in trees:
            self._scan_aliases(path, tree)
        for path, tree in trees:
            self._scan_labels(path, tree, trees)
        for path, tree in trees:
            self._scan_handed(path, tree)
        self.literals = {n.value for _, t in trees for n in ast.walk(t)
                         if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    # -- registrations --

    def _name(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self._consts.get(node.id)
        return None

    def _labels_arg(self, call: ast.Call, pos: int, where: str) -> tuple[str, ...] | None:
        node = call.args[pos] if len(call.args) > pos else next(
            (k.value for k in call.keywords if k.arg in ("labels", "labelnames")), None)
        if node is None:
            return ()
        if isinstance(node, ast.List | ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            return tuple(e.value for e in node.elts)  # type: ignore[attr-defined]
        self.problems.append(f"{where}: label names are not a literal list")
        return None

    def _scan_registrations(self, path: pathlib.Path, tree: ast.Module) -> None:
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        rel = path.relative_to(ROOT)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or not call.args:
                continue
            func = call.func
            method = func.attr if isinstance(func, ast.Attribute) else (
                func.id if isinstance(func, ast.Name) else None)
            name = self._name(call.args[0])
            where = f"{rel}:{call.lineno}"
            if name is None:
                continue
            bind = _binding(parents, call)
            if method in KINDS or (method and method.lower() in KINDS and method[0].isupper()):
                kind = method.lower()
                labels = self._labels_arg(call, 2, where)
                if labels is not None:
                    self.registrations.append(
                        Registration(family_name(name, kind), kind, labels, where, bind))
            elif method == "rate" and isinstance(func, ast.Attribute):
                counter = self._name(call.args[2]) if len(call.args) > 2 else None
                self.registrations.append(Registration(name, "gauge", (), where, bind))
                self.registrations.append(Registration(
                    family_name(counter or name.removesuffix("_rate"), "counter"), "counter",
                    (), where, None))

    def _scan_aliases(self, path: pathlib.Path, tree: ast.Module) -> None:
        """``x = helper(...)`` where ``helper`` returns a registration: ``x`` is that metric."""
        rel = path.relative_to(ROOT)
        helpers = {r.binding: r for r in self.registrations if r.binding
                   and r.binding.endswith("()")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.value, ast.Call)):
                reg = helpers.get(f"{_receiver_name(node.value.func)}()")
                t = node.targets[0]
                alias = t.attr if isinstance(t, ast.Attribute) else (
                    t.id if isinstance(t, ast.Name) else None)
                if reg is not None and alias:
                    self.registrations.append(attrs.evolve(
                        reg, where=f"{rel}:{node.lineno}", binding=alias))

    def _scan_handed(self, path: pathlib.Path, tree: ast.Module) -> None:
        """A metric handed to a function (``self._export(..., self.metrics.resyncs)``) is
        labelled where the scan cannot see: its values count as computed."""
        rel = path.relative_to(ROOT)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                if not isinstance(arg, ast.Attribute | ast.Name):
                    continue
                reg = self._metric_for(_receiver_name(arg), path)
                if isinstance(arg, ast.Name) and reg is not None and not reg.where.startswith(
                        f"{rel}:"):
                    continue  # a local variable of the same name, not the metric
                if reg is None or not reg.labels:
                    continue
                uses = self.uses.setdefault(reg.family, {})
                for label in reg.labels:
                    uses.setdefault(label, LabelUse()).computed.append(f"{rel}:{call.lineno}")

    # -- label call sites --

    def _metric_for(self, receiver: str | None, path: pathlib.Path) -> Registration | None:
        if receiver is None:
            return None
        found = [r for r in self.registrations if r.binding == receiver]
        local = [r for r in found if r.where.startswith(str(path.relative_to(ROOT)) + ":")]
        pick = local or found
        return pick[0] if len({r.family for r in pick}) == 1 else None

    def _scan_labels(self, path: pathlib.Path, tree: ast.Module,
                     trees: list[tuple[pathlib.Path, ast.Module]]) -> None:
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        rel = path.relative_to(ROOT)
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "labels"):
                continue
            where = f"{rel}:{call.lineno}"
            recv = call.func.value
            reg = None
            if isinstance(recv, ast.Call):  # registered and labelled in one expression
                reg = next((r for r in self.registrations
                            if r.where == f"{rel}:{recv.lineno}"), None)
            else:
                reg = self._metric_for(_receiver_name(recv), path)
            if reg is None:
                continue  # e.g. a helper handed the counter: see _scan_handed
            uses = self.uses.setdefault(reg.family, {})
            args = list(zip(reg.labels, call.args, strict=False)) + [
                (k.arg, k.value) for k in call.keywords if k.arg]
            for label, node in args:
                use = uses.setdefault(label, LabelUse())
                self._evaluate(node, use, where, parents, trees)

    def _evaluate(self, node: ast.AST, use: LabelUse, where: str,
                  parents: dict[ast.AST, ast.AST],
                  trees: list[tuple[pathlib.Path, ast.Module]]) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            use.literals.add(node.value)
        elif isinstance(node, ast.IfExp):
            self._evaluate(node.body, use, where, parents, trees)
            self._evaluate(node.orelse, use, where, parents, trees)
        elif isinstance(node, ast.JoinedStr):
            use.patterns.add("".join(
                re.escape(v.value) if isinstance(v, ast.Constant) else ".+"
                for v in node.values))
        elif isinstance(node, ast.Name) and node.id in self._consts:
            use.literals.add(self._consts[node.id])
        elif isinstance(node, ast.Name) and not self._from_callers(node, use, parents, trees):
            use.computed.append(where)
        elif not isinstance(node, ast.Name):
            use.computed.append(where)

    def _from_callers(self, node: ast.Name, use: LabelUse, parents: dict[ast.AST, ast.AST],
                      trees: list[tuple[pathlib.Path, ast.Module]]) -> bool:
        """A parameter of the enclosing function: the literal arguments of its callers."""
        fn = parents.get(node)
        while fn is not None and not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            fn = parents.get(fn)
        if fn is None:
            return False
        params = [a.arg for a in fn.args.args]
        if node.id not in params:
            return False
        pos = params.index(node.id) - (1 if params and params[0] == "self" else 0)
        defined_in = [t for _, t in trees if any(
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == fn.name
            for n in ast.walk(t))]
        # A name defined in one module only may be called from anywhere; else its own module.
        own = next(t for _, t in trees if fn in ast.walk(t))
        found = False
        for tree in [t for _, t in trees] if len(defined_in) == 1 else [own]:
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                callee = call.func.attr if isinstance(call.func, ast.Attribute) else (
                    call.func.id if isinstance(call.func, ast.Name) else None)
                if callee != fn.name:
                    continue
                arg = call.args[pos] if len(call.args) > pos else next(
                    (k.value for k in call.keywords if k.arg == node.id), None)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    use.literals.add(arg.value)
                    found = True
                elif arg is not None:
                    return False  # one caller passes a computed value: the whole is computed
        return found
