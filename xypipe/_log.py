"""Structured JSON logs.

One line per event, one JSON object per line, on stderr. Every line at WARNING or above carries
an error ``code``; a missing code is itself a bug, so :meth:`Logger.error` requires one. Values of
fields whose names look secret (token, password, secret, authorization, creds, jwt) are masked
before they are written, wherever they come from.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRET_MARKERS = ("token", "password", "secret", "authorization", "creds", "jwt", "nkey", "seed")
_ROOT = "xypipe"


def mask(value: object) -> str:
    """Keep enough of a secret to correlate log lines, never enough to use it."""
    text = str(value)
    if len(text) <= 8:
        return "***"
    return f"{text[:4]}…{text[-2:]} (len={len(text)})"


def _is_secret(key: str) -> bool:
    k = key.lower()
    return any(m in k for m in _SECRET_MARKERS)


def scrub(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, dict):
            out[k] = scrub(v)
        elif _is_secret(k) and v is not None:
            out[k] = mask(v)
        else:
            out[k] = v
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "xy_fields", None)
        if fields:
            doc.update(scrub(fields))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc.setdefault("error", f"{type(exc).__name__}: {exc}")
            doc.setdefault("code", getattr(exc, "code", "XY-GEN-000"))
        return json.dumps(doc, default=str, separators=(",", ":"))


class Logger:
    """A thin wrapper that turns keyword arguments into JSON fields."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: dict[str, Any] | None = None) -> None:
        self._logger = logger
        self._bound = bound or {}

    def bind(self, **fields: Any) -> Logger:
        return Logger(self._logger, {**self._bound, **fields})

    def _emit(
        self, level: int, msg: str, fields: dict[str, Any], exc: BaseException | None
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        self._logger.log(
            level,
            msg,
            extra={"xy_fields": {**self._bound, **fields}},
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, msg, fields, None)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit(logging.INFO, msg, fields, None)

    def warning(self, msg: str, *, code: str, **fields: Any) -> None:
        self._emit(logging.WARNING, msg, {"code": code, **fields}, None)

    def error(
        self, msg: str, *, code: str, exc: BaseException | None = None, **fields: Any
    ) -> None:
        self._emit(logging.ERROR, msg, {"code": code, **fields}, exc)


def get_logger(name: str, **bound: Any) -> Logger:
    full = name if name.startswith(_ROOT) else f"{_ROOT}.{name}"
    return Logger(logging.getLogger(full), bound)


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``stream``, or to whatever ``sys.stderr`` is at the time of each line (so a
    replaced stderr, as under test runners, never leaves us writing to a closed file)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self._fixed = stream

    @property
    def stream(self) -> Any:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "info", stream: Any = None) -> None:
    """Install the JSON handler on the ``xypipe`` logger (idempotent)."""
    root = logging.getLogger(_ROOT)
    for h in list(root.handlers):
        if getattr(h, "_xy", False):
            root.removeHandler(h)
    handler = _StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler._xy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    logging.Formatter.converter = time.gmtime
