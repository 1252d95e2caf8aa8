"""One ``xypipe run`` per embedded data directory: an advisory lock held for the server's life.

Two runs on one data directory would share a live JetStream store (and the role keys kept in
it): the second server opens the first one's files, and the real error is buried in a dump of
nats-server's log — or there is none, and both write. So the run that owns the embedded server
takes an exclusive ``flock`` on ``DATA_DIR/xypipe.lock`` before it writes anything there, and a
second run is refused at once with one line naming the directory and the holder
(:class:`~xypipe._errors.DataDirLocked`, ``XY-EMB-010``).

The lock belongs to an open file description: it is held while this process keeps the
descriptor open, across every in-place restart of the server (the supervisor never lets go of
it), and it is handed to each nats-server child too (:attr:`DataDirLock.fd` is passed to it),
so a server that outlives a killed owner for a moment still holds the directory. The kernel
drops it when the last holder exits, however it exits: a stale lock file never blocks a run.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

import attrs

from xypipe._errors import DataDirLocked, DataDirUnusable

__all__ = ["LOCK_NAME", "DataDirLock", "Holder", "holder"]

#: The lock file's name inside the data directory (it holds the owner's pid, for the message).
LOCK_NAME = "xypipe.lock"


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class DataDirLock:
    """An exclusive lock on a data directory; release with :meth:`release` or ``with``."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.fd = fd

    @property
    def path(self) -> Path:
        return self.data_dir / LOCK_NAME

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike[str]) -> DataDirLock:
        """Create the directory if needed and lock it, or raise :class:`DataDirLocked` at once
        (never waits) when another run holds it."""
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DataDirUnusable(
                f"cannot lock the embedded NATS data directory {path}: {exc.strerror} "
                f"({path / LOCK_NAME}); expected a directory this user may write") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirUnusable(
                    f"cannot lock the embedded NATS data directory {path}: {exc.strerror}"
                ) from exc
            by = f" (pid {pid})" if pid is not None else ""
            raise DataDirLocked(
                f"the embedded NATS data directory {path} is in use by another xypipe run"
                f"{by}: stop that one first (Ctrl-C where it runs, or `xypipe demo down`), or "
                "give this config another [nats.embedded] data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let go of the lock (idempotent). The file stays: it is harmless unlocked."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        os.close(fd)  # closing the last descriptor of the description drops the lock

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@attrs.frozen
class Holder:
    """Who holds a data directory: the pid its lock file records (None if unreadable)."""

    pid: int | None


def holder(data_dir: str | os.PathLike[str]) -> Holder | None:
    """Who holds ``data_dir``'s lock; None when it is free (or has never been locked).
    Probes without creating anything."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return Holder(_read_pid(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
