"""Writing the chain's files: secrets 0600 in 0700 directories, every file replaced atomically.

A reader — nats-py re-reading a ``.creds`` file at a reconnect, a server reloading its
configuration — sees the old file or the new one, never half of one: each is written to a
temporary file beside it (created 0600, so a secret is never readable by others, not even for
a moment) and renamed over the old one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "write_atomic"]


def private_dir(path: Path) -> Path:
    """``path`` created (with parents) and set to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> Path:
    """Replace ``path`` with ``data`` atomically; the file ends with ``mode``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path
