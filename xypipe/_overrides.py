"""Config keys set by the environment and the command line, over the file.

Precedence: command line (``--set KEY=VALUE``) > environment > file > default. Every key of a
config can be set:

* ``XYPIPE_`` + the key's path, its parts joined by ``__`` and written in capitals:
  ``XYPIPE_NATS__URL``, ``XYPIPE_PROCESSES__GATEWAY__WORKERS``,
  ``XYPIPE_PIPELINES__GATEWAY__STAGES__1__ALLOWED_ORIGINS`` (a stage by its index, or by its
  name: ``..._STAGES__GATEWAY__...``). A name is matched without regard to case, ``-`` written
  as ``_``; the names of processes, pipelines and stages are those of the file (the
  environment changes keys, it adds no process);
* the spec's two switches, as aliases: ``JWT_PUBLIC_KEY`` is the ``public_key`` of every
  stage that checks browser tokens (``gateway``, ``flag_admin``), ``ALLOWED_ORIGINS`` the
  ``allowed_origins`` of every ``gateway`` stage; an ``XYPIPE_`` variable for the same key
  wins over its alias;
* ``--set pipelines.gateway.stages[1].allowed_origins='["https://a.example"]'``.

A value is read by the type of its key: a string key takes the text as it is; any other key a
TOML value (``4``, ``2.5``, ``true``, ``["a", "b"]``, ``{ ca = "ca.pem" }``), read by
``tomllib``, and the text itself when it is no TOML value (``workers = auto``); a list of
strings also comma-separated words (``ALLOWED_ORIGINS=*``). The loader then checks it like any
value of the file, and a refusal names the variable, the key and what was expected.

An ``XYPIPE_`` variable that names no key is an error with a did-you-mean, except the ones
xypipe uses for itself (:data:`RESERVED`).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from xypipe._config import (
    _STAGE_RESERVED,
    AppConfig,
    RawTable,
    RestartPolicy,
    _AppTable,
    _PipelineTable,
    parse_config,
    read_config_doc,
)
from xypipe._edge import Budget
from xypipe._errors import (
    CFG_OVERRIDE_NOT_TABLE,
    CFG_OVERRIDE_TWICE,
    CFG_OVERRIDE_UNKNOWN,
    CFG_OVERRIDE_VALUE,
    CFG_SET_SYNTAX,
    ConfigError,
    PluginError,
    WiringError,
    XyError,
)
from xypipe._gateway._options import FlagAdminOptions, GatewayOptions
from xypipe._gc import ENV as GC_ENV
from xypipe._log import LOG_DIR_ENV
from xypipe._redact import is_secret_field, redact_text
from xypipe._registry import resolve_stage
from xypipe._validate import show
from xypipe._worker import (
    CONTROL_PORT_ENV,
    GENERATION_ENV,
    PROCESS_ENV,
    WORKER_ENV,
    WORKERS_ENV,
)

__all__ = [
    "ALIASES", "ENV_PREFIX", "RESERVED", "BadValue", "Effective", "KeyPath", "Override",
    "env_name", "load_effective", "parse_value", "render_key",
]

ENV_PREFIX = "XYPIPE_"
_SEP = "__"

#: ``XYPIPE_`` variables xypipe reads for itself: never config keys, never refused.
RESERVED = frozenset({
    LOG_DIR_ENV,  # a copy of every log line (the test suite's secret scan)
    PROCESS_ENV, WORKER_ENV, WORKERS_ENV,  # which copy of a process a child is
    GENERATION_ENV, CONTROL_PORT_ENV,  # which rollout generation, where the supervisor reads it
    "XYPIPE_TOKEN",  # `xypipe tail-ws`: the bearer token
    "XYPIPE_HEALTHZ",  # the container's HEALTHCHECK: the URL it probes
    GC_ENV,  # `default`: CPython's own garbage collector settings (docs/architecture.md)
})


@attrs.frozen
class Alias:
    """An environment variable without the prefix that sets ``key`` of every stage whose
    options are one of ``options``."""

    var: str
    key: str
    options: tuple[type, ...]


#: The spec's demo switches (``JWT_PUBLIC_KEY=/app/.demo_pub.pem``, ``ALLOWED_ORIGINS=*``).
ALIASES = (
    Alias("JWT_PUBLIC_KEY", "public_key", (GatewayOptions, FlagAdminOptions)),
    Alias("ALLOWED_ORIGINS", "allowed_origins", (GatewayOptions,)),
)

#: A key's place in the config: table keys and list indices.
KeyPath = tuple[str | int, ...]

# Which overrides win: applied in this order, a later one over an earlier one.
_RANK = {"alias": 0, "env": 1, "cli": 2}


@attrs.frozen
class Override:
    """One key set from outside the file."""

    path: KeyPath
    text: str
    #: ``"env"``, ``"alias"`` or ``"cli"``.
    kind: str
    #: What the person wrote: the variable's name, or ``--set KEY``.
    label: str

    @property
    def source(self) -> str:
        """Where the value came from, as ``check --effective`` shows it."""
        if self.kind == "alias":
            return f"env {self.label} (alias)"
        return f"env {self.label}" if self.kind == "env" else f"command line {self.label}"


@attrs.frozen
class Effective:
    """A config as it runs, and where each of its values came from."""

    config: AppConfig
    #: The file as read, before anything was set over it.
    file: RawTable
    #: The overrides in the order they were applied (a later one wins).
    applied: tuple[Override, ...]
    #: Reserved ``XYPIPE_`` variables present (xypipe's own, not config keys).
    reserved: tuple[str, ...] = ()
    #: Aliases set in the environment that this config has no key for.
    unused: tuple[str, ...] = ()

    def explain(self, exc: ConfigError) -> ConfigError:
        """``exc`` (about this config: a prod-profile finding) with each line about a key set
        from outside the file naming the variable or ``--set`` that set it; same codes."""
        # The text stands for the value: a secret's key is a string key, which takes it as is.
        applied = [(ov, ov.text) for ov in self.applied]
        lines, codes = _annotate(exc, self.config.path, self.file, applied, recode=False)
        out = copy.copy(exc)
        out.problems, out.codes = lines, codes
        out.args = ("\n".join(lines),)
        out.message = out.args[0]
        return out

    def source_of(self, path: KeyPath) -> str:
        """``command line --set K``, ``env XYPIPE_…``, ``env (alias) NAME``, ``file`` or
        ``default``."""
        for ov in reversed(self.applied):
            if path[: len(ov.path)] == ov.path:
                return ov.source
        return "file" if _in_doc(self.file, path) else "default"


def _in_doc(doc: object, path: KeyPath) -> bool:
    node = doc
    for part in path:
        if isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                return False
            node = node[part]
        else:
            # A file value that stands for a table (`restart = "always"`): its keys are the
            # file's too.
            return True
    return True


# --------------------------------------------------------------------------- the key tree


class _Stage:
    """Marks a stage table in the key tree: its keys depend on its ``use``."""


#: Tables the loader keeps raw and checks in a second pass, with their real shape.
_SHAPES: dict[tuple[type, str], object] = {
    (_AppTable, "pipelines"): dict[str, _PipelineTable],
    (_PipelineTable, "stages"): list[_Stage],
}


def _norm(name: str) -> str:
    return name.upper().replace("-", "_")


def _unwrap(t: object) -> object:
    """``X | None`` is ``X``."""
    if typing.get_origin(t) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t


_FIELDS: dict[type, dict[str, object]] = {}


def _fields(cls: type) -> dict[str, object]:
    """The keys of an attrs table and their types (with the loader's raw tables' real shape)."""
    if cls not in _FIELDS:
        try:
            attrs.resolve_types(cls)
        except NameError:
            pass  # a plugin's annotation we cannot resolve: its keys are found, values TOML
        _FIELDS[cls] = {f.name: _SHAPES.get((cls, f.name), f.type) for f in attrs.fields(cls)
                        if f.init and not f.name.startswith("_")}
    return _FIELDS[cls]


def _stage_name(table: object) -> str:
    if not isinstance(table, dict):
        return ""
    use = table.get("use")
    name = table.get("name", use.rsplit(":", 1)[-1].lower() if isinstance(use, str) else "")
    return name if isinstance(name, str) else ""


def _stage_options(table: object) -> type | None:
    use = table.get("use") if isinstance(table, dict) else None
    if not isinstance(use, str):
        return None
    try:
        return resolve_stage(use).Config
    except PluginError:
        return None  # the loader says what is wrong with `use`


def _stage_fields(table: object) -> dict[str, object] | None:
    """The keys of a stage table (None: any key, its stage being unknown)."""
    options = _stage_options(table)
    if options is None:
        return None
    reserved: dict[str, object] = {"use": str, "name": str, "budget": Budget,
                                   "restart": RestartPolicy}
    assert set(reserved) == set(_STAGE_RESERVED)
    return {**reserved, **(_fields(options) if attrs.has(options) else {})}


@attrs.frozen
class _Child:
    key: str | int
    shape: object
    node: object


def _children(shape: object, node: object) -> list[_Child] | None:
    """The keys one level down (None: a value, or a table of any keys)."""
    shape = _unwrap(shape)
    if shape is _Stage:
        fields = _stage_fields(node)
        if fields is None:
            return None
        return [_Child(k, t, node.get(k) if isinstance(node, dict) else None)
                for k, t in fields.items()]
    if isinstance(shape, type) and attrs.has(shape):
        return [_Child(k, t, node.get(k) if isinstance(node, dict) else None)
                for k, t in _fields(shape).items()]
    origin, args = typing.get_origin(shape), typing.get_args(shape)
    if origin is dict and args and isinstance(node, dict):
        return [_Child(k, args[1], v) for k, v in node.items()]
    if origin in (list, tuple) and args and isinstance(node, list):
        item = args[0]
        # Items that are tables; a list of values is one value.
        if item is _Stage or (isinstance(item, type) and attrs.has(item)):
            return [_Child(i, item, v) for i, v in enumerate(node)]
    return None


@attrs.frozen
class _Found:
    path: KeyPath
    shape: object


class _NoKey(XyError):
    """A variable's part that names no key (turned into a line of the config's error)."""

    code = CFG_OVERRIDE_UNKNOWN

    def __init__(self, at: int, choices: list[str]) -> None:
        super().__init__(f"part {at} names no key")
        #: Which part named nothing, and what it could have been (spelled as in a variable).
        self.at = at
        self.choices = choices


def _find(doc: RawTable, parts: Sequence[str]) -> _Found:
    """The key that ``parts`` (a variable's parts, or a ``--set`` key's) names; parts are
    matched without regard to case, ``-`` as ``_``, a list's items by index or stage name."""
    shape: object = _AppTable
    node: object = doc
    path: list[str | int] = []
    for at, part in enumerate(parts):
        children = _children(shape, node)
        if children is None:
            if _unwrap(shape) is _Stage and at == len(parts) - 1:
                path.append(part.lower())  # an unknown stage: the loader reports its `use`
                return _Found(tuple(path), object)
            raise _NoKey(at, [])
        hit = _match(children, part)
        if hit is None:
            raise _NoKey(at, [_norm(_label(c)) for c in children])
        path.append(hit.key)
        shape, node = hit.shape, hit.node
    return _Found(tuple(path), shape)


def _label(child: _Child) -> str:
    if isinstance(child.key, int):
        return str(child.key)
    return child.key


def _match(children: list[_Child], part: str) -> _Child | None:
    wanted = _norm(part)
    if part.isdigit():
        return next((c for c in children if c.key == int(part)), None)
    found = [c for c in children if isinstance(c.key, str) and _norm(c.key) == wanted]
    if not found:  # a stage by its name
        found = [c for c in children if isinstance(c.key, int)
                 and _norm(_stage_name(c.node)) == wanted]
    return found[0] if len(found) == 1 else None


def _all_vars(doc: RawTable) -> list[str]:
    """Every variable that names a key of this config (for a did-you-mean)."""
    out: list[str] = []

    def walk(shape: object, node: object, prefix: str) -> None:
        children = _children(shape, node)
        if children is None:
            return
        for c in children:
            name = f"{prefix}{_SEP if prefix != ENV_PREFIX else ''}{_norm(_label(c))}"
            out.append(name)
            walk(c.shape, c.node, name)

    walk(_AppTable, doc, ENV_PREFIX)
    return out


# --------------------------------------------------------------------------- values


def parse_value(text: str, shape: object) -> object:
    """The value ``text`` sets on a key of type ``shape``: a string key takes the text as it
    is, a list of strings comma-separated words too, any other key a TOML value — or the text,
    for the loader to refuse with what it expected."""
    shape = _unwrap(shape)
    if shape is str or _is_str_literal(shape):
        return text
    origin, args = typing.get_origin(shape), typing.get_args(shape)
    if (origin in (list, tuple) and args and args[0] is str
            and not text.lstrip().startswith("[")):
        return [w.strip() for w in text.split(",")] if text.strip() else []
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError as exc:
        if text.lstrip()[:1] in ("[", "{"):  # meant as a TOML array or table: say why not
            what = "array" if text.lstrip()[0] == "[" else "inline table"
            raise BadValue(f"expected a TOML {what}, got {show(text)} ({exc})") from None
        return text
    # A newline in the text could add keys of its own: then it is no one value.
    return parsed["v"] if set(parsed) == {"v"} else text


def _is_str_literal(shape: object) -> bool:
    return typing.get_origin(shape) is typing.Literal and all(
        isinstance(a, str) for a in typing.get_args(shape))


class BadValue(XyError):
    """A value meant as TOML (``[…``, ``{…``) that is none."""

    code = CFG_OVERRIDE_VALUE


# --------------------------------------------------------------------------- rendering


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def render_key(path: KeyPath, doc: RawTable | None = None) -> str:
    """A key as the loader writes it in its messages: ``pipelines.gateway.stages[1]
    (gateway).allowed_origins`` (with ``doc``: the stage's name after its index)."""
    out = ""
    node: object = doc
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += (("." if out else "") + part) if _BARE.fullmatch(part) else f"[{show(part)}]"
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        if isinstance(part, int) and i >= 1 and path[i - 1] == "stages" and node is not None:
            out += f" ({_stage_name(node)})"
    return out


def env_name(path: KeyPath) -> str:
    """The variable that sets ``path``."""
    return ENV_PREFIX + _SEP.join(_norm(str(p)) for p in path)


# --------------------------------------------------------------------------- collecting


@attrs.frozen
class _Wanted:
    parts: tuple[str, ...]
    text: str
    kind: str
    label: str


def _from_env(environ: Mapping[str, str]) -> tuple[list[_Wanted], list[str]]:
    wanted, reserved = [], []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        if var in RESERVED:
            reserved.append(var)
            continue
        parts = tuple(var[len(ENV_PREFIX):].split(_SEP))
        wanted.append(_Wanted(parts, environ[var], "env", var))
    return wanted, reserved


_SET_KEY = re.compile(r"\[(\d+)\]")


def _from_cli(sets: Iterable[str], problems: list[tuple[str, str]]) -> list[_Wanted]:
    out = []
    for item in sets:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            problems.append((f"--set {item}: expected KEY=VALUE, e.g. --set "
                             "processes.gateway.workers=2", CFG_SET_SYNTAX))
            continue
        parts = tuple(p for p in _SET_KEY.sub(r".\1", key).split(".") if p)
        out.append(_Wanted(parts, text, "cli", f"--set {key}"))
    return out


def _aliases(doc: RawTable, environ: Mapping[str, str]
             ) -> tuple[list[tuple[Override, object]], list[str]]:
    out: list[tuple[Override, object]] = []
    unused = []
    for alias in ALIASES:
        if alias.var not in environ:
            continue
        targets: list[tuple[Override, object]] = []
        pipelines = doc.get("pipelines")
        for pname, ptable in (pipelines.items() if isinstance(pipelines, dict) else ()):
            stages = ptable.get("stages") if isinstance(ptable, dict) else None
            for i, stage in enumerate(stages if isinstance(stages, list) else ()):
                options = _stage_options(stage)
                if options is not None and issubclass(options, alias.options):
                    path = ("pipelines", pname, "stages", i, alias.key)
                    targets.append((Override(path, environ[alias.var], "alias", alias.var),
                                    _fields(options)[alias.key]))
        if not targets:
            unused.append(alias.var)
        out += targets
    return out, unused


def _resolve(doc: RawTable, wanted: list[_Wanted], problems: list[tuple[str, str]]
             ) -> list[tuple[Override, object]]:
    found: list[tuple[Override, object]] = []
    every: list[str] | None = None
    for w in wanted:
        try:
            hit = _find(doc, w.parts)
        except _NoKey as exc:
            every = _all_vars(doc) if every is None else every
            problems.append((_unknown(w, exc, every), CFG_OVERRIDE_UNKNOWN))
            continue
        found.append((Override(hit.path, w.text, w.kind, w.label), hit.shape))
    return found


def _unknown(w: _Wanted, exc: _NoKey, every: list[str]) -> str:
    bad = w.parts[exc.at]
    where = ".".join(p.lower() for p in w.parts[: exc.at]) or "the config"
    what = (f"{where} has no item {bad}" if bad.isdigit()
            else f"{where} has no key {bad.lower()!r}")
    written = ENV_PREFIX + _SEP.join(_norm(p) for p in w.parts)
    # The closest of: the name with the wrong part mended, and every name this config has
    # (a single `_` where the path needs `__`).
    guesses = [ENV_PREFIX + _SEP.join((*(_norm(p) for p in w.parts[: exc.at]), close,
                                       *(_norm(p) for p in w.parts[exc.at + 1:])))
               for close in difflib.get_close_matches(_norm(bad), exc.choices, n=1, cutoff=0.6)]
    guesses += difflib.get_close_matches(written, every, n=1, cutoff=0.6)
    hint = ""
    if guesses:
        guess = max(guesses, key=lambda g: difflib.SequenceMatcher(None, written, g).ratio())
        if w.kind == "cli":
            guess = ".".join(p.lower() for p in guess[len(ENV_PREFIX):].split(_SEP))
        hint = f"; did you mean {guess}?"
    return f"{w.label}: names no config key ({what}){hint}"


# --------------------------------------------------------------------------- applying


def _apply(doc: RawTable, ov: Override, value: object) -> str | None:
    """Set ``value`` at ``ov.path`` in ``doc``; a problem line when a file value on the way
    is not a table."""
    node: object = doc
    for i, part in enumerate(ov.path[:-1]):
        nxt: object
        if isinstance(node, dict):
            assert isinstance(part, str)
            nxt = node.setdefault(part, {})  # a table the file leaves out
        elif isinstance(node, list) and isinstance(part, int):
            nxt = node[part]
        else:
            nxt = None
        if not isinstance(nxt, dict | list):
            return (f"{ov.label}: {render_key(ov.path[: i + 1], doc)} is {show(nxt)} in the "
                    f"file, not a table; set {_whole(ov, i + 1)} instead")
        node = nxt
    last = ov.path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int):
        node[last] = value
    return None


def _whole(ov: Override, depth: int) -> str:
    head = ov.path[:depth]
    if ov.kind == "cli":
        return "--set " + render_key(head)
    return env_name(head)


def _annotate(exc: ConfigError, shown: str, doc: RawTable,
              applied: Sequence[tuple[Override, object]], *, recode: bool = True
              ) -> tuple[list[str], list[str]]:
    """The loader's lines, those about a key set from outside the file naming who set it (and
    coded as a refused override, unless ``recode`` is false)."""
    keyed = [(render_key(ov.path, doc), ov, value) for ov, value in applied]
    lines, codes = [], []
    for line, code in exc.coded():
        rest = line.removeprefix(f"{shown}: ")
        key, sep, said = rest.partition(": ")
        for rendered, ov, value in reversed(keyed):
            if key == rendered or key.startswith((rendered + ".", rendered + "[")):
                last = next((p for p in reversed(ov.path) if isinstance(p, str)), "")
                if is_secret_field(last):
                    said = said.replace(show(value), '"***"')
                who = ov.label if ov.kind == "cli" else f"{ov.label} ({key})"
                line = f"{shown}: {who}{sep}{redact_text(said)}"
                code = CFG_OVERRIDE_VALUE if recode else code
                break
        lines.append(line)
        codes.append(code)
    return lines, codes


def load_effective(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None,
                   sets: Sequence[str] = ()) -> Effective:
    """Read ``path``, set over it what ``environ`` (by default ours) and ``sets`` (``--set``
    arguments) say, and validate the result; raises :class:`ConfigError` with every problem."""
    shown = str(path)
    environ = os.environ if environ is None else environ
    file = read_config_doc(Path(path), shown)
    problems: list[tuple[str, str]] = []
    env_wanted, reserved = _from_env(environ)
    cli_wanted = _from_cli(sets, problems)
    found, unused = _aliases(file, environ)
    found += _resolve(file, env_wanted + cli_wanted, problems)
    _refuse_twice(found, problems)
    # Lower precedence first, and within one source a table before the keys inside it.
    found.sort(key=lambda f: (_RANK[f[0].kind], len(f[0].path)))
    doc = copy.deepcopy(file)
    applied: list[tuple[Override, object]] = []
    for ov, shape in found:
        if ov.kind == "alias" and any(o.path == ov.path for o, _ in found if o.kind != "alias"):
            continue  # the variable that names the key wins over its alias
        try:
            value = parse_value(ov.text, shape)
        except BadValue as exc:
            problems.append((f"{ov.label} ({render_key(ov.path, doc)}): {exc}",
                             CFG_OVERRIDE_VALUE))
            continue
        problem = _apply(doc, ov, value)
        if problem is not None:
            problems.append((problem, CFG_OVERRIDE_NOT_TABLE))
            continue
        applied.append((ov, value))
    try:
        cfg = parse_config(doc, shown)
    except ConfigError as exc:
        lines, codes = _annotate(exc, shown, doc, applied)
        kind = WiringError if isinstance(exc, WiringError) and not problems else ConfigError
        raise kind([f"{shown}: {p}" for p, _ in problems] + lines,
                   codes=[c for _, c in problems] + codes) from None
    if problems:
        raise ConfigError([f"{shown}: {p}" for p, _ in problems], codes=[c for _, c in problems])
    cfg = attrs.evolve(cfg, cli_sets=tuple(sets))
    return Effective(cfg, file, tuple(ov for ov, _ in applied), tuple(reserved), tuple(unused))


def _refuse_twice(found: list[tuple[Override, object]], problems: list[tuple[str, str]]) -> None:
    seen: dict[tuple[str, KeyPath], Override] = {}
    for ov, _ in found:
        if ov.kind == "alias":
            continue
        other = seen.setdefault((ov.kind, ov.path), ov)
        if other is not ov and ov.kind == "env":
            problems.append((f"{ov.label}: sets {render_key(ov.path)}, which {other.label} "
                             "sets too; keep one", CFG_OVERRIDE_TWICE))
