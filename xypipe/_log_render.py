"""How a log line looks: one JSON object per line (machines), or a coloured line (people).

Both renderers start from the same :class:`LogEvent` — the message and fields with every secret
already redacted (:mod:`xypipe._redact`) — so what one shows, the other shows too, and neither
ever prints a traceback (an exception is logged as ``error="Type: message"``, redacted, with its
``code``; a group of exceptions as its leaves, and an unexpected one with the place it was
raised, so a crashed stage's line names the actual fault). The console lines are rendered by
rich's ``RichHandler`` (time, level, message), the fields appended as ``key=value`` with rich's
highlighter; rich decides colours (none when the stream is not a terminal, or under
``NO_COLOR``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

import attrs
from rich.console import Console, ConsoleRenderable
from rich.highlighter import ReprHighlighter
from rich.logging import RichHandler
from rich.text import Text

from xypipe._errors import XyError, describe_exception
from xypipe._redact import redact, redact_text

__all__ = ["ConsoleRenderer", "Fields", "JsonFormatter", "JsonRenderer", "LogEvent", "scrub"]

#: The fields of a log line: JSON-able values (anything else is logged as its ``str``).
Fields = dict[str, object]

_ROOT_PREFIX = "xypipe."


def scrub(fields: Fields) -> Fields:
    """The fields of a log line with every secret redacted (see :mod:`xypipe._redact`)."""
    return {k: redact(v, k) for k, v in fields.items()}


@attrs.frozen
class LogEvent:
    """A log record's message and fields, redacted: what every renderer shows."""

    msg: str
    fields: Fields

    @classmethod
    def of(cls, record: logging.LogRecord) -> LogEvent:
        raw: Fields | None = getattr(record, "xy_fields", None)
        fields = scrub(raw) if raw else {}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields.setdefault("error", redact_text(describe_exception(exc)))
            fields.setdefault("code", exc.code if isinstance(exc, XyError) else XyError.code)
        return cls(redact_text(record.getMessage()), fields)


def _json_line(record: logging.LogRecord, event: LogEvent) -> str:
    doc: Fields = {
        "ts": round(record.created, 6),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": event.msg,
        **event.fields,
    }
    return json.dumps(doc, default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """The JSON line of a record, for a plain ``logging`` handler (tests use it so)."""

    def format(self, record: logging.LogRecord) -> str:
        return _json_line(record, LogEvent.of(record))


class JsonRenderer:
    """Writes JSON lines to ``stream``, or to whatever ``sys.stderr`` is at the time of each
    line (so a replaced stderr, as under test runners, never leaves us writing to a closed file)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._fixed = stream

    def write(self, record: logging.LogRecord, event: LogEvent) -> None:
        stream = self._fixed if self._fixed is not None else sys.stderr
        stream.write(_json_line(record, event) + "\n")
        stream.flush()


class _FieldsHandler(RichHandler):
    """rich's log handler, with the event's redacted message and its fields after it."""

    _values = ReprHighlighter()

    def line(self, record: logging.LogRecord, event: LogEvent) -> ConsoleRenderable:
        text = Text()
        if record.name.startswith(_ROOT_PREFIX):
            text.append(f"{record.name.removeprefix(_ROOT_PREFIX)}: ", style="log.path")
        text.append_text(self.highlighter(Text(event.msg)))
        fields = dict(event.fields)
        code = fields.pop("code", None)
        if code is not None:
            text.append(f"  [{code}]", style=f"logging.level.{record.levelname.lower()}")
        for key, value in fields.items():
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            text.append("  ")
            text.append(key, style="repr.attrib_name")
            text.append("=", style="repr.attrib_equal")
            text.append_text(self._values(Text(shown)))
        return self.render(record=record, traceback=None, message_renderable=text)


class ConsoleRenderer:
    """Readable lines for a person at a terminal, rendered by rich."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # file=None with stderr=True: rich looks sys.stderr up at each line, as JsonRenderer.
        console = Console(file=stream, stderr=stream is None)
        self._handler = _FieldsHandler(console=console, show_path=False, markup=False,
                                       log_time_format="[%H:%M:%S]")

    @property
    def console(self) -> Console:
        return self._handler.console

    def write(self, record: logging.LogRecord, event: LogEvent) -> None:
        self.console.print(self._handler.line(record, event))
