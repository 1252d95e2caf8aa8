"""A process follows its rotated ``.creds`` file without a restart.

nats-py reads a ``.creds`` *path* at every connect and reconnect, but it never reconnects by
itself when the file changes, and when a user JWT expires the server closes the connection
with ``-ERR 'User Authentication Expired'``, which nats-py treats as final (the client closes
for good). So the new file must be used *before* the old JWT runs out: :func:`follow_creds`
watches the file and, when a valid rotated one appears, has the connection sign in again
(:meth:`NatsClient.reconnect`) — subscriptions are restored, nothing is restarted. A JWT that
is about to expire unrotated, or has expired, is logged.

:class:`CredsFollower` is the decision (a sans-I/O core fed the file's identity, its text and
the wall time); :func:`follow_creds` is the Trio shell that polls the file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs
import trio

from xypipe._creds._jwt import decode, parse_creds
from xypipe._errors import (
    CREDS_EXPIRED,
    CREDS_EXPIRING,
    CREDS_ROTATION_INVALID,
    CREDS_ROTATION_PICKED_UP,
    CredsError,
)
from xypipe._log import get_logger

__all__ = ["CredsFollower", "FileId", "Reconnect", "Reconnecting", "Warn", "follow_creds"]

_log = get_logger("creds")


class Reconnecting(Protocol):
    """What the follower needs of a connection (``xypipe._nats.NatsClient``)."""

    async def reconnect(self) -> None: ...


@attrs.frozen
class FileId:
    """What tells a rewritten file apart (an atomic replace changes the inode)."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)


@attrs.frozen
class Reconnect:
    """Sign in again: the file holds a valid JWT for ``user`` until ``expires_at``."""

    user: str
    expires_at: int | None


@attrs.frozen
class Warn:
    code: str
    message: str
    fields: dict[str, object] = attrs.field(factory=dict)


Effect = Reconnect | Warn


class CredsFollower:
    """Decides, from what the file holds and the time, whether to sign in again or warn."""

    def __init__(self, path: Path, *, warn_before_s: float) -> None:
        self.path = path
        self.warn_before_s = warn_before_s
        self._seen: FileId | None = None
        self._expires_at: int | None = None
        self._warned_expiring = False
        self._warned_expired = False
        self._warned_invalid: FileId | None = None

    def start(self, file_id: FileId, text: str) -> None:
        """The file the connection signed in with."""
        self._seen = file_id
        self._expires_at = self._expiry(text)

    def _expiry(self, text: str) -> int | None:
        jwt, _ = parse_creds(text)
        return decode(jwt, kind="user").expires_at

    def changed(self, file_id: FileId | None) -> bool:
        """Whether ``file_id`` is a file not judged yet (the shell then reads it)."""
        return file_id is not None and file_id not in (self._seen, self._warned_invalid)

    def observe(self, file_id: FileId | None, text: str, now: float) -> list[Effect]:
        """One look at the file (``None``: it is missing right now; ``text``: what it holds,
        read when :meth:`changed`) at wall time ``now``."""
        effects: list[Effect] = []
        if file_id is not None and self.changed(file_id):
            try:
                jwt, seed = parse_creds(text)
                claims = decode(jwt, kind="user")
                if seed is None:
                    raise CredsError("the file holds no seed")
                if claims.expires_at is not None and claims.expires_at <= now:
                    raise CredsError("its JWT has already expired")
            except CredsError as exc:
                self._warned_invalid = file_id
                effects.append(Warn(CREDS_ROTATION_INVALID,
                                    "the creds file changed but cannot be used; the connection "
                                    "keeps the credentials it signed in with",
                                    {"file": str(self.path), "error": str(exc)}))
            else:
                self._seen = file_id
                self._expires_at = claims.expires_at
                self._warned_expiring = self._warned_expired = False
                effects.append(Reconnect(claims.subject, claims.expires_at))
                return effects
        exp = self._expires_at
        if exp is None:
            return effects
        left = exp - now
        if left <= 0 and not self._warned_expired:
            self._warned_expired = True
            effects.append(Warn(CREDS_EXPIRED, "the NATS user JWT has expired and its creds "
                                "file was not rotated: the server will refuse this process",
                                {"file": str(self.path), "expired_at": exp}))
        elif 0 < left <= self.warn_before_s and not self._warned_expiring:
            self._warned_expiring = True
            effects.append(Warn(CREDS_EXPIRING, "the NATS user JWT expires soon and its creds "
                                "file was not rotated (xypipe creds rotate ROLE)",
                                {"file": str(self.path), "expires_in_s": round(left)}))
        return effects


def _look(path: Path) -> FileId | None:
    try:
        return FileId.of(path.stat())
    except FileNotFoundError:
        return None


async def follow_creds(path: str | os.PathLike[str], client: Reconnecting, *,
                       poll_s: float = 1.0, warn_before_s: float = 300.0,
                       wall: Callable[[], float] = time.time,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Until cancelled: when ``path`` is replaced by a valid rotated ``.creds`` file, have
    ``client`` sign in again with it; warn before and when the JWT in use expires.

    Run it beside the connection that was opened with ``creds=path``, in the same nursery.
    """
    creds = Path(path)
    follower = CredsFollower(creds, warn_before_s=warn_before_s)
    start = await trio.to_thread.run_sync(_look, creds)
    if start is None:
        raise CredsError(f"{creds}: the creds file does not exist")
    follower.start(start, await trio.to_thread.run_sync(creds.read_text))
    task_status.started()
    while True:
        await trio.sleep(poll_s)
        file_id = await trio.to_thread.run_sync(_look, creds)
        text = ""
        if follower.changed(file_id):
            try:
                text = await trio.to_thread.run_sync(creds.read_text)
            except (OSError, UnicodeDecodeError) as exc:
                text = f"(unreadable: {exc})"
        for effect in follower.observe(file_id, text, wall()):
            if isinstance(effect, Reconnect):
                _log.info("the creds file was rotated; signing in again with it",
                          code=CREDS_ROTATION_PICKED_UP, file=str(creds), user=effect.user,
                          expires_at=effect.expires_at)
                await client.reconnect()
            else:
                _log.warning(effect.message, code=effect.code, **effect.fields)
