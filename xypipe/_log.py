"""Structured logs: JSON lines for machines, readable lines for people.

One line per event on stderr. Every line at WARNING or above carries an error ``code``; a
missing code is itself a bug, so :meth:`Logger.error` requires one. Secrets are redacted before
a line is written, wherever they come from, by what a value *is* (a JWT, a private key, an NKey
seed, a bearer credential) and for fields that are secret by name (a password):
:mod:`xypipe._redact`. Identities (``sub``, ``principal``, ``user``) are never masked.

How lines look (``[log] format``, overridden by ``$XY_LOG_FORMAT`` and ``--log-format``):
``json`` (one object per line), ``console`` (coloured lines rendered by rich), or ``auto`` —
console when stderr is a terminal, JSON otherwise (:mod:`xypipe._log_render`).

Repeated warnings and errors — same logger, level, code and message — are folded: a few are
written, then one summary counts the rest (:mod:`xypipe._log_repeats`). Summaries are written
when the next line comes after the window closed, by :func:`summarise_repeats` (a task of the
process's nursery) and, for whatever is still open, when the handler closes at exit.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Literal, Protocol, TextIO, get_args

import trio

from xypipe._errors import LOG_BAD_FORMAT, UsageError
from xypipe._log_render import (
    ConsoleRenderer,
    Fields,
    JsonFormatter,
    JsonRenderer,
    LogEvent,
    scrub,
)
from xypipe._log_repeats import RepeatFolder, RepeatKey, RepeatPolicy, RepeatStatistics, Summary

__all__ = [
    "ENV_FORMAT",
    "FORMATS",
    "Fields",
    "JsonFormatter",
    "LogFormat",
    "Logger",
    "RepeatPolicy",
    "configure",
    "flush_repeats",
    "get_logger",
    "resolve_format",
    "scrub",
    "summarise_repeats",
]

_ROOT = "xypipe"
#: A directory every process also appends its JSON lines to (one file per process).
LOG_DIR_ENV = "XYPIPE_LOG_DIR"

LogFormat = Literal["auto", "json", "console"]
FORMATS: tuple[str, ...] = get_args(LogFormat)
#: Overrides ``[log] format``; ``--log-format`` sets it, so child processes follow.
ENV_FORMAT = "XY_LOG_FORMAT"


class Logger:
    """A thin wrapper that turns keyword arguments into log fields."""

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


class Renderer(Protocol):
    def write(self, record: logging.LogRecord, event: LogEvent) -> None: ...


class XyHandler(logging.Handler):
    """Folds repeated lines, then hands each line to its renderer (JSON or console)."""

    def __init__(self, renderer: Renderer, repeats: RepeatPolicy,
                 clock: Callable[[], float]) -> None:
        super().__init__()
        self.renderer = renderer
        self._folder = RepeatFolder(repeats)
        self._clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: Fields = getattr(record, "xy_fields", None) or {}
            code = fields.get("code")
            if record.levelno >= logging.WARNING and isinstance(code, str):
                key = RepeatKey(record.name, record.levelno, code, record.getMessage())
                verdict = self._folder.feed(key, self._clock())
                summaries, write = verdict.summaries, verdict.write
            else:
                summaries, write = tuple(self._folder.due(self._clock())), True
            self._write_summaries(summaries)
            if write:
                self.renderer.write(record, LogEvent.of(record))
        except Exception:
            self.handleError(record)

    def flush_repeats(self, *, all_open: bool = False) -> None:
        """Write the summaries of windows that have closed (called by a timer task), or of
        every open one."""
        self.acquire()
        try:
            self._write_summaries(self._folder.drain() if all_open
                                  else self._folder.due(self._clock()))
        finally:
            self.release()

    def statistics(self) -> RepeatStatistics:
        return self._folder.statistics()

    def close(self) -> None:
        # At exit (logging.shutdown) or when replaced: no folded line stays uncounted.
        self.acquire()
        try:
            self._write_summaries(self._folder.drain())
        finally:
            self.release()
        super().close()

    def _write_summaries(self, summaries: tuple[Summary, ...] | list[Summary]) -> None:
        for s in summaries:
            record = logging.LogRecord(
                s.key.logger, s.key.level, "", 0,
                f"{s.key.msg} (repeated {s.folded} more times in {s.window_s:g} s)", None, None)
            record.xy_fields = {"code": s.key.code, "repeated": s.folded,
                                "window_s": s.window_s}
            self.renderer.write(record, LogEvent.of(record))


def resolve_format(configured: str, stream: TextIO | None = None) -> Literal["json", "console"]:
    """The format lines are written in: ``$XY_LOG_FORMAT`` over ``configured``; ``auto`` is
    console when the stream (stderr by default) is a terminal, JSON otherwise."""
    chosen = os.environ.get(ENV_FORMAT) or configured
    if chosen not in FORMATS:
        import difflib

        close = difflib.get_close_matches(chosen, FORMATS, n=1, cutoff=0.6)
        where = f"${ENV_FORMAT}" if os.environ.get(ENV_FORMAT) else "log format"
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{where}: expected one of {', '.join(map(repr, FORMATS))}, got "
                      f"{chosen!r}{hint}", code=LOG_BAD_FORMAT)
    if chosen == "auto":
        target = stream if stream is not None else sys.stderr
        isatty = getattr(target, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    return "console" if chosen == "console" else "json"


def _installed() -> XyHandler | None:
    for h in logging.getLogger(_ROOT).handlers:
        if isinstance(h, XyHandler):
            return h
    return None


def configure(level: str = "info", stream: TextIO | None = None, *, format: str = "auto",
              repeats: RepeatPolicy | None = None,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Install the handler on the ``xypipe`` logger (idempotent: it replaces the last one,
    writing out that one's open summaries first). ``clock`` measures the repeat windows."""
    renderer: Renderer = (ConsoleRenderer(stream) if resolve_format(format, stream) == "console"
                          else JsonRenderer(stream))
    root = logging.getLogger(_ROOT)
    old = _installed()
    if old is not None:
        root.removeHandler(old)
        old.close()
    root.addHandler(XyHandler(renderer, repeats or RepeatPolicy(), clock))
    # A copy of every line as JSON, for tools that read a run's logs after the fact (the test
    # suite's secret scan): $XYPIPE_LOG_DIR/xypipe-<pid>.jsonl.
    for h in list(root.handlers):
        if getattr(h, "_xy_copy", False):
            root.removeHandler(h)
            h.close()
    copy_dir = os.environ.get(LOG_DIR_ENV)
    if copy_dir:
        copy = logging.FileHandler(os.path.join(copy_dir, f"xypipe-{os.getpid()}.jsonl"),
                                   encoding="utf-8", delay=True)
        copy.setFormatter(JsonFormatter())
        copy._xy_copy = True  # type: ignore[attr-defined]
        root.addHandler(copy)
    root.setLevel(level.upper())
    root.propagate = False
    logging.Formatter.converter = time.gmtime


def flush_repeats(*, all_open: bool = False) -> None:
    """Write the summaries of closed windows now — of every open one with ``all_open`` (a
    test's logs then stay in its own capture). No-op without an installed handler."""
    handler = _installed()
    if handler is not None:
        handler.flush_repeats(all_open=all_open)


async def summarise_repeats(period_s: float = 1.0) -> None:
    """Write folded-line summaries within ``period_s`` of their window closing, even when no
    other line comes to carry them out. Runs until cancelled (a task of the process's nursery)."""
    while True:
        await trio.sleep(period_s)
        flush_repeats()
