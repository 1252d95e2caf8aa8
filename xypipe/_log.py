"""Structured JSON logs.

One line per event, one JSON object per line, on stderr. Every line at WARNING or above carries
an error ``code``; a missing code is itself a bug, so :meth:`Logger.error` requires one. Secrets
are redacted before a line is written, wherever they come from, by what a value *is* (a JWT, a
private key, an NKey seed, a bearer credential) and for fields that are secret by name (a
password): :mod:`xypipe._redact`. Identities (``sub``, ``principal``, ``user``) are never masked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

from xypipe._errors import XyError
from xypipe._redact import redact, redact_text

_ROOT = "xypipe"
#: A directory every process also appends its JSON lines to (one file per process).
LOG_DIR_ENV = "XYPIPE_LOG_DIR"


#: The fields of a log line: JSON-able values (anything else is logged as its ``str``).
Fields = dict[str, object]


def scrub(fields: Fields) -> Fields:
    """The fields of a log line with every secret redacted (see :mod:`xypipe._redact`)."""
    return {k: redact(v, k) for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: Fields = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        fields: Fields | None = getattr(record, "xy_fields", None)
        if fields:
            doc.update(scrub(fields))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc.setdefault("error", redact_text(f"{type(exc).__name__}: {exc}"))
            doc.setdefault("code", exc.code if isinstance(exc, XyError) else XyError.code)
        return json.dumps(doc, default=str, separators=(",", ":"))


class Logger:
    """A thin wrapper that turns keyword arguments into JSON fields."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: Fields | None = None) -> None:
        self._logger = logger
        self._bound = bound or {}

    def bind(self, **fields: object) -> Logger:
        return Logger(self._logger, {**self._bound, **fields})

    def _emit(
        self, level: int, msg: str, fields: Fields, exc: BaseException | None
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        self._logger.log(
            level,
            msg,
            extra={"xy_fields": {**self._bound, **fields}},
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )

    def debug(self, msg: str, **fields: object) -> None:
        self._emit(logging.DEBUG, msg, fields, None)

    def info(self, msg: str, **fields: object) -> None:
        self._emit(logging.INFO, msg, fields, None)

    def warning(self, msg: str, *, code: str, **fields: object) -> None:
        self._emit(logging.WARNING, msg, {"code": code, **fields}, None)

    def error(
        self, msg: str, *, code: str, exc: BaseException | None = None, **fields: object
    ) -> None:
        self._emit(logging.ERROR, msg, {"code": code, **fields}, exc)


def get_logger(name: str, **bound: object) -> Logger:
    full = name if name.startswith(_ROOT) else f"{_ROOT}.{name}"
    return Logger(logging.getLogger(full), bound)


class _StreamHandler(logging.StreamHandler[TextIO]):
    """Writes to ``stream``, or to whatever ``sys.stderr`` is at the time of each line (so a
    replaced stderr, as under test runners, never leaves us writing to a closed file)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Install the JSON handler on the ``xypipe`` logger (idempotent)."""
    root = logging.getLogger(_ROOT)
    for h in list(root.handlers):
        if getattr(h, "_xy", False):
            root.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = [_StreamHandler(stream)]
    copy_dir = os.environ.get(LOG_DIR_ENV)
    if copy_dir:
        handlers.append(logging.FileHandler(
            os.path.join(copy_dir, f"xypipe-{os.getpid()}.jsonl"), encoding="utf-8", delay=True))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        handler._xy = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    logging.Formatter.converter = time.gmtime
