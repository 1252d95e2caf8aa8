"""Run a command with its stderr on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pathlib
import pty
import subprocess

from rich.text import Text


def run_on_a_terminal(argv: list[str], cwd: pathlib.Path,
                      env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Exit status, stdout (a pipe) and what the terminal received on stderr (with its
    escape codes)."""
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=follower, env=env) as proc:
            os.close(follower)
            follower = -1
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the terminal's last writer closed it
                    break
                if not chunk:
                    break
                seen += chunk
            assert proc.stdout is not None
            out = proc.stdout.read()
            status = proc.wait(timeout=60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    return status, out, seen


def shown(seen: bytes) -> str:
    """What a person reads from terminal output: escape codes and carriage returns removed."""
    return Text.from_ansi(seen.decode().replace("\r\n", "\n")).plain
