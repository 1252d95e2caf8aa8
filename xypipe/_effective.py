"""``xypipe check --effective``: a config as it would run, one key a line, with its source.

::

    nats.url = "embedded"                                 # file
    nats.embedded.port = 4300                             # env XYPIPE_NATS__EMBEDDED__PORT
    nats.password = "***"                                 # env XYPIPE_NATS__PASSWORD
    pipelines.gateway.stages[1].allowed_origins = ["*"]   # env ALLOWED_ORIGINS (alias)
    # nats.tls: not set                                   # default

Keys are written as the loader's messages write them, values as TOML/JSON would; a value that
is a secret by ``xypipe._redact``'s rules (its key's name, or its shape: a JWT, a private key,
an NKey seed) is shown as ``***``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from xypipe._config import AppConfig, PipelineConfig, StageDecl
from xypipe._overrides import Effective, KeyPath, render_key
from xypipe._redact import is_secret_field, redact_text
from xypipe._validate import show

__all__ = ["MASK", "effective_lines"]

#: What a secret is shown as.
MASK = '"***"'
#: Fields that are not keys of the file (the loader's bookkeeping).
_SKIP: dict[type, frozenset[str]] = {
    AppConfig: frozenset({"path", "cli_sets"}),
    PipelineConfig: frozenset({"name", "stages"}),
    StageDecl: frozenset({"index", "stage_cls", "config"}),
}
_COLUMN = 56


def effective_lines(eff: Effective) -> list[str]:
    """The lines ``xypipe check --effective`` prints for ``eff``."""
    cfg = eff.config
    rows: list[tuple[KeyPath, str]] = []
    _walk(cfg, (), rows)
    out = [f"# {cfg.path}: the effective config (command line > environment > file > default)"]
    for path, value in rows:
        key = render_key(path)
        text = f"{key} = {value}" if value else f"# {key}: not set"
        out.append(f"{text:<{_COLUMN}} # {eff.source_of(path)}")
    if eff.reserved:
        out.append(f"# xypipe's own variables, not config keys: {', '.join(eff.reserved)}")
    for var in eff.unused:
        out.append(f"# {var}: this config has no stage it sets; not used")
    return out


def _walk(value: object, path: KeyPath, rows: list[tuple[KeyPath, str]]) -> None:
    if isinstance(value, PipelineConfig):
        _fields(value, path, rows)
        for decl in value.stages:
            _stage(decl, (*path, "stages", decl.index), rows)
        return
    if attrs.has(type(value)):
        _fields(value, path, rows)
        return
    if isinstance(value, Mapping) and any(attrs.has(type(v)) for v in value.values()):
        for key, item in value.items():
            _walk(item, (*path, str(key)), rows)
        return
    if (isinstance(value, list | tuple) and value
            and all(attrs.has(type(v)) for v in value)):
        for i, item in enumerate(value):
            _walk(item, (*path, i), rows)
        return
    rows.append((path, _shown(path, value)))


def _fields(value: object, path: KeyPath, rows: list[tuple[KeyPath, str]]) -> None:
    cls = type(value)
    if not attrs.has(cls):
        return
    skip = _SKIP.get(cls, frozenset())
    for field in attrs.fields(cls):
        if field.name in skip or field.name.startswith("_") or not field.init:
            continue
        _walk(getattr(value, field.name), (*path, field.name), rows)


def _stage(decl: StageDecl, path: KeyPath, rows: list[tuple[KeyPath, str]]) -> None:
    _fields(decl, path, rows)
    if attrs.has(type(decl.config)):
        _fields(decl.config, path, rows)


def _shown(path: KeyPath, value: object) -> str:
    """``value`` as a TOML/JSON value, ``***`` for a secret, "" for a key not set."""
    if value is None:
        return ""
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    if is_secret_field(name):
        return MASK
    text = show(_plain(value))
    return MASK if redact_text(text) != text else text


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if attrs.has(type(value)):
        return _plain(attrs.asdict(value, recurse=False))  # type: ignore[arg-type]
    return value
