"""Is the feed's JetStream consumer still there? The sans-I/O core of its self-healing.

The feed's consumer is ephemeral and lives on the server (see ``docs/architecture.md``,
"JetStream choices"): a server restart, a lame-duck move, a cluster node loss, the server's
inactivity reaper or an operator can remove it, and deliveries pushed while the connection was
down are lost for good (``max_deliver = 1``). Nothing on the wire says so; this class decides
from what the shell feeds it (times are plain numbers from the shell's clock):

- deliveries and idle heartbeats (the server sends one every ``heartbeat_s`` while it has
  nothing to deliver): silence for ``missed`` intervals *while the feed waits* means "presumed
  lost — ask the server" (consumer info); two such checks that find the consumer but still no
  heartbeat mean "re-create it anyway";
- a heartbeat whose ``Nats-Last-Stream`` is ahead of the last delivery received: deliveries were
  lost in transit ("gap") — re-create;
- a reconnect: deliveries may have been pushed into the void while we were away, and the server
  may be a fresh one — re-create without asking;
- lame-duck mode announced: ask now (the move itself comes as a reconnect).

A re-created consumer starts at :attr:`resume_seq` (last stream sequence handed downstream + 1);
:meth:`accept` drops deliveries the feed has already returned, so an overlap never reaches the
caller twice and there is never a hole. Failed checks are retried after :class:`Backoff`.
"""

from __future__ import annotations

import attrs

from xypipe._retry import DEFAULT_BACKOFF, Backoff

#: Why the consumer was checked or re-created (the ``reason`` label of
#: ``js_consumer_recreated_total``).
HEARTBEAT = "heartbeat"  # silence: consumer info is asked first
MISSING = "missing"  # consumer info: it is gone
SILENT = "silent"  # it exists but has sent nothing for several checks
GAP = "gap"  # a heartbeat says deliveries we never received were sent
RECONNECTED = "reconnected"
LAME_DUCK = "lame_duck"


@attrs.frozen
class Check:
    """What the shell must do now: ``recreate`` at once, or ask for consumer info first."""

    reason: str
    recreate: bool


class ConsumerWatch:
    def __init__(self, heartbeat_s: float, missed: int, now: float,
                 backoff: Backoff = DEFAULT_BACKOFF) -> None:
        if heartbeat_s <= 0 or missed < 1:
            raise ValueError(f"heartbeat_s must be > 0 and missed >= 1, got {heartbeat_s}, "
                             f"{missed}")
        self.heartbeat_s = heartbeat_s
        self.missed = missed
        self.backoff = backoff
        #: Last stream sequence handed downstream (acknowledged).
        self.last_seq = 0
        #: Last stream sequence returned to the caller (>= last_seq).
        self.last_received = 0
        self._last_heard = now
        self._wait_since: float | None = None
        self._pending: Check | None = None
        self._attempt = 0
        self._retry_at = now
        self._silent_checks = 0

    # -- what happened ------------------------------------------------------------------------
    def started(self, now: float, delivered_seq: int) -> None:
        """The consumer was created; the server reports it has delivered up to
        ``delivered_seq`` (its start sequence - 1)."""
        self.last_seq = max(self.last_seq, delivered_seq)
        self.last_received = max(self.last_received, delivered_seq)
        self._resolved(now)

    def heard(self, now: float) -> None:
        """A delivery or a heartbeat arrived: the consumer is alive."""
        self._last_heard = now
        self._silent_checks = 0

    def heartbeat(self, now: float, last_stream_seq: int | None) -> None:
        """An idle heartbeat; ``last_stream_seq`` is its ``Nats-Last-Stream`` header (``None``
        when not usable, e.g. for a filtered consumer)."""
        self.heard(now)
        if last_stream_seq is not None and last_stream_seq > self.last_received:
            self._raise(Check(GAP, True))

    def reconnected(self) -> None:
        self._raise(Check(RECONNECTED, True))
        # The server is back: act now, not at the end of a backoff meant for an absent one.
        self._attempt = 0
        self._retry_at = float("-inf")

    def lame_duck(self) -> None:
        self._raise(Check(LAME_DUCK, False))

    def deleted(self) -> None:
        """The server said the consumer was deleted (status 409)."""
        self._raise(Check(MISSING, True))

    def waiting(self, now: float) -> None:
        """The caller waits for deliveries (silence counts only from here: while the caller is
        busy downstream, heartbeats queue up unread)."""
        if self._wait_since is None:
            self._wait_since = now

    def got_batch(self) -> None:
        self._wait_since = None

    def accept(self, seq: int) -> bool:
        """Whether a delivery of stream sequence ``seq`` is new to the caller; records it."""
        if seq <= self.last_received:
            return False
        self.last_received = seq
        return True

    def handed(self, seq: int) -> None:
        if seq > self.last_seq:
            self.last_seq = seq

    # -- what to do ---------------------------------------------------------------------------
    @property
    def resume_seq(self) -> int:
        """Where a re-created consumer starts: nothing handed downstream is delivered again,
        nothing after it is skipped."""
        return self.last_seq + 1

    def due(self, now: float) -> Check | None:
        if self._pending is not None:
            return self._pending if now >= self._retry_at else None
        if self._wait_since is not None and now >= self._silence_deadline():
            return Check(SILENT if self._silent_checks >= 2 else HEARTBEAT,
                         self._silent_checks >= 2)
        return None

    def deadline(self) -> float:
        """When :meth:`due` may next return a check (if nothing arrives before)."""
        if self._pending is not None:
            return self._retry_at
        if self._wait_since is None:
            return float("inf")
        return self._silence_deadline()

    def _silence_deadline(self) -> float:
        assert self._wait_since is not None
        return max(self._last_heard, self._wait_since) + self.missed * self.heartbeat_s

    # -- how it went --------------------------------------------------------------------------
    def confirmed(self, now: float, check: Check) -> None:
        """Consumer info found the consumer (after a silence or a lame-duck notice)."""
        silent = self._silent_checks
        self._resolved(now)
        if check.reason == HEARTBEAT:
            self._silent_checks = silent + 1

    def recreated(self, now: float) -> None:
        self._resolved(now)
        self._silent_checks = 0

    def failed(self, now: float, check: Check) -> float:
        """The check or re-creation failed transiently; returns the delay before the retry."""
        self._raise(check)
        self._attempt += 1
        delay = self.backoff.delay(self._attempt)
        self._retry_at = now + delay
        return delay

    def _raise(self, check: Check) -> None:
        cur = self._pending
        # A stronger reason replaces a weaker one: re-creating beats asking.
        if cur is None or (check.recreate and not cur.recreate):
            self._pending = check

    def _resolved(self, now: float) -> None:
        self._pending = None
        self._attempt = 0
        self._retry_at = now
        self._last_heard = now
        if self._wait_since is not None:
            self._wait_since = now


__all__ = ["Check", "ConsumerWatch"]
