"""What every ``xypipe`` command shares: its log options and how it reports an error.

An expected failure is one line a person reads, ending with its code —
``xypipe publish: connect to nats://127.0.0.1:4222: no server reachable within 4 s [XY-NATS-005]``
— and a config's problems one line each, starting with the file; never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from xypipe import _log
from xypipe._errors import ConfigError, UsageError, XyError

__all__ = ["add_log_options", "error_lines", "report"]


def add_log_options(p: argparse.ArgumentParser, *, level: str | None = None) -> None:
    """``--log-level`` and ``--log-format`` (the latter passed on to child processes)."""
    default = f"default {level}" if level else "default: the config's [log] level"
    p.add_argument("--log-level", default=level, choices=["debug", "info", "warning", "error"],
                   help=f"lowest level logged ({default})")
    p.add_argument("--log-format", default=None, choices=_log.FORMATS,
                   help="json lines, readable console lines, or auto: console on a terminal "
                        f"(default: ${_log.ENV_FORMAT}, else the config's [log] format)")


def error_lines(exc: XyError) -> list[str]:
    """An error as the lines a person reads: one per problem of a config (each starts with its
    file), else one line; each ends with its code."""
    if isinstance(exc, ConfigError):
        return [f"{problem} [{code}]" for problem, code in exc.coded()]
    return [f"{' / '.join(str(exc).splitlines())} [{exc.code}]"]


def report(prefix: str, exc: XyError) -> int:
    """Print ``exc`` as the one line (one per config problem) a person reads; its exit status:
    2 for what the user asked for (a config, an argument), 1 for what went wrong doing it."""
    lines = error_lines(exc)
    if not isinstance(exc, ConfigError):
        lines = [f"{prefix}: {line}" for line in lines]
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 2 if isinstance(exc, ConfigError | UsageError) else 1
