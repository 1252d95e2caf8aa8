"""Reloads a verifier's key set when its files change or on SIGHUP (the Trio shell of
:mod:`._keyset`).

A reload is all or nothing: an unusable file is logged (``XY-AUTH-020``, naming it) and counted,
and the keys in force stay — a half-written key directory never logs anybody out. A reload that
removes kids tells ``on_removed`` (the gateway ends the sessions whose token one of them verified).
The poll compares a cheap fingerprint (names, mtimes, sizes) every ``interval_s``; SIGHUP reloads
at once, for deployments that prefer to say when.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import trio

from xypipe._errors import AUTH_KEYS_RELOADED, AuthError, AuthKeysBad
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._keyset import fingerprint, load_keyset
from xypipe._log import Logger
from xypipe._metrics import Metrics

__all__ = ["KeyWatch"]


def _nothing(_: frozenset[str]) -> None:
    return None


class KeyWatch:
    """Keeps ``verifier``'s keys in step with ``source`` (a PEM file, directory or JWKS file)."""

    def __init__(self, source: str, verifier: TokenVerifier, *, log: Logger, metrics: Metrics,
                 surface: str, interval_s: float,
                 on_removed: Callable[[frozenset[str]], None] = _nothing) -> None:
        self.source = source
        self.verifier = verifier
        self.log = log
        self.surface = surface
        self.interval_s = interval_s
        self.on_removed = on_removed
        self._seen = fingerprint(source)
        self._loaded = metrics.gauge(
            "auth_keys_loaded", "Token verification keys in force, by surface", ["surface"])
        self._reloads = metrics.counter(
            "auth_key_reloads", "Token key set reloads by surface and result (applied, refused)",
            ["surface", "result"])
        self._loaded.labels(surface).set(len(verifier.keys.keys))
        for result in ("applied", "refused"):
            self._reloads.labels(surface, result).inc(0)

    def reload(self, why: str) -> bool:
        """Load the source again; True when the new set is in force."""
        self._seen = fingerprint(self.source)
        try:
            keys = load_keyset(self.source)
        except AuthError as exc:
            self._reloads.labels(self.surface, "refused").inc()
            self.log.error("token key set not reloaded: the keys in force stay",
                           code=AuthKeysBad.code, source=self.source, trigger=why,
                           reason=exc.message, kept=sorted(self.verifier.keys.kids))
            return False
        before = self.verifier.keys.kids
        removed = self.verifier.replace_keys(keys)
        self._reloads.labels(self.surface, "applied").inc()
        self._loaded.labels(self.surface).set(len(keys.keys))
        self.log.info("token key set reloaded", code=AUTH_KEYS_RELOADED, source=self.source,
                      trigger=why, kids=sorted(keys.kids), added=sorted(keys.kids - before),
                      removed=sorted(removed))
        if removed:
            self.on_removed(removed)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.interval_s > 0:
                nursery.start_soon(self._poll)
            if threading.current_thread() is threading.main_thread():
                await nursery.start(self._hangups)
            task_status.started()

    async def _poll(self) -> None:
        while True:
            await trio.sleep(self.interval_s)
            if fingerprint(self.source) != self._seen:
                self.reload("file change")

    async def _hangups(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as hangups:
            task_status.started()
            async for _ in hangups:
                self.reload("SIGHUP")
