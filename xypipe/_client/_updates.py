"""What a client yields: one frozen value per thing that happened, in the order it happened.

``async for update in client`` gives these; ``match``/``isinstance`` picks the ones a program
cares about. Deltas and snapshots are applied to the client's books before their update is
yielded, so ``client.book(update.group)`` already holds the new state.
"""

from __future__ import annotations

import attrs

from xypipe._degrade import Level
from xypipe.contracts import SymbolState


@attrs.frozen
class Connected:
    """A ``Welcome``: the session is open — the first time, or again after a reconnect, when
    ``resumed`` groups continue from the client's last points and ``subscribed`` ones start
    from a snapshot."""

    session_id: str
    principal: str
    heartbeat_ms: int
    token_expires_us: int
    #: Connections opened before this one.
    reconnects: int
    resumed: tuple[str, ...] = ()
    subscribed: tuple[str, ...] = ()


@attrs.frozen
class TokenRefreshed:
    """The gateway accepted a refreshed token (a ``Welcome`` on an open session)."""

    token_expires_us: int


@attrs.frozen
class Subscribed:
    """The gateway confirmed these groups (after a subscribe or a resume)."""

    groups: tuple[str, ...]


@attrs.frozen
class SnapshotApplied:
    """A snapshot of ``group`` replaced the client's book of it (a first snapshot, a resync,
    or a new epoch); ``replayed`` held deltas after it were applied next (each also yields a
    :class:`DeltaApplied`)."""

    group: str
    epoch: int
    version: int
    shard_seq: tuple[tuple[int, int], ...]
    symbols: int
    #: Whether the book had a snapshot before (a resync) rather than this being its first.
    resync: bool
    #: Snapshot entries whose checksum did not match (counted; the snapshot is kept).
    checksum_mismatches: int = 0
    replayed: int = 0


@attrs.frozen
class DeltaApplied:
    """A delta continued its stream and was applied to ``group``'s book."""

    group: str
    shard: int
    epoch: int
    first_seq: int
    seq: int
    #: The states now held for the delta's symbols (a trimmed entry with its deeper levels).
    symbols: tuple[SymbolState, ...]
    #: Symbols that left the group (``venue.symbol``).
    removed: tuple[str, ...]
    #: The aggregator's (or, for a slow connection, the gateway's) degradation level.
    level: int
    ts_emit_us: int
    #: Entries whose checksum did not match: applied, and the group resynchronises.
    checksum_mismatches: int = 0
    #: Held while its group waited for a snapshot, applied after it.
    replayed: bool = False


@attrs.frozen
class DeltaSkipped:
    """A delta the sequence rules did not apply (``docs/protocol.md``, "Sequence rules"):
    ``verdict`` is ``duplicate``, ``gap``, ``far_future``, ``stale_epoch``, ``future_epoch``,
    ``stale_fence`` (from an aggregator that has since lost the group to another) or ``held``
    (its group waits for a snapshot; held deltas after it are replayed)."""

    group: str
    shard: int
    epoch: int
    first_seq: int
    seq: int
    verdict: str


@attrs.frozen
class SnapshotRequested:
    """The client asked the gateway to resend ``group`` from a snapshot; ``reason`` is
    ``gap``, ``future_epoch``, ``far_future``, ``checksum``, ``overdue`` or ``gap after
    snapshot``."""

    group: str
    reason: str


@attrs.frozen
class Degraded:
    """The gateway changed this connection's degradation level (slow consumer)."""

    level: Level
    reason: str
    recovery: str
    paused_groups: tuple[str, ...]


@attrs.frozen
class ErrorReceived:
    """An ``Error`` frame. A fatal one is followed by the close (and the error the client
    raises); a non-fatal one (``ACL_DENIED``, ``UNKNOWN_GROUP``, ``RATE_LIMITED``...) leaves the
    connection open. ``name`` is the ``ErrorCode`` name (``ERROR_CODE_ACL_DENIED``)."""

    code: int
    name: str
    message: str
    group: str
    fatal: bool
    ref_id: int


@attrs.frozen
class BadFrame:
    """The gateway sent something that is not a binary ``ServerFrame`` (skipped, counted)."""

    reason: str


@attrs.frozen
class FrameReceived:
    """Lean mode only: one data frame, not decoded (nothing is verified)."""

    data: bytes


@attrs.frozen
class MoveRequested:
    """The gateway worker is draining (a ``GoAway``): the client closes, reconnects at once to
    the URL it was given — never anywhere else — and resumes every group from its last
    point."""

    reason: str
    #: The gateway's hint: how long to wait if the first reconnection fails.
    retry_ms: int


@attrs.frozen
class Disconnected:
    """The connection ended; the client reconnects after ``retry_in_s`` and resumes."""

    close_code: int | None
    reason: str
    retry_in_s: float


Update = (Connected | TokenRefreshed | Subscribed | SnapshotApplied | DeltaApplied
          | DeltaSkipped | SnapshotRequested | Degraded | ErrorReceived | BadFrame
          | FrameReceived | Disconnected | MoveRequested)


@attrs.frozen
class ClientStatistics:
    """What a client has seen so far (``client.statistics()``), a frozen record."""

    connects: int
    frames: int
    bytes: int
    snapshots: int
    deltas: int
    applied: int
    #: Deltas not applied, by verdict (``duplicate``, ``gap``, ``held``, ``far_future``...);
    #: ``stale_fence`` counts snapshots from a replaced owner too.
    skipped: dict[str, int]
    checksums_verified: int
    checksum_mismatches: int
    trimmed: int
    snapshot_requests: int
    #: Groups continued by a ``Resume`` after a reconnect (not sent a fresh snapshot).
    resumed_groups: int
    errors: int
    bad_frames: int
    #: The shortest ping round trip seen, in milliseconds (``None`` before the first pong).
    best_rtt_ms: float | None
    #: GoAway frames received (draining gateways that asked this client to move).
    moves: int = 0

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)
