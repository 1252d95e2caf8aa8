"""One group as the client holds it: its symbols, where each of its streams stands, its Top-K.

The client's protocol core is the only writer; programs read a book (``client.book("fx")``)
between two updates. A book is live (``synced``) once a snapshot arrived and while no snapshot
is awaited (after a gap, a new epoch or a checksum mismatch the symbols are kept but stale
until the resync's snapshot replaces them).
"""

from __future__ import annotations

from collections.abc import Mapping

from xypipe._md.client import Applied, Check, Symbols, apply_entries, verify_checksum
from xypipe.contracts import Delta, Snapshot, SymbolState, TopEntry


class GroupBook:
    """The state of one group: ``symbols[(venue, symbol)]`` is a ``SymbolState``."""

    def __init__(self, group: str) -> None:
        self.group = group
        #: The epoch (aggregator incarnation) the book is in; 0 before the first snapshot.
        self.epoch = 0
        #: The version of the snapshot the book last restarted from.
        self.version = 0
        self._symbols: Symbols = {}
        self._seqs: dict[int, int] = {}
        self._top: tuple[TopEntry, ...] = ()
        self.top_by = ""
        #: A snapshot arrived, and none is awaited now.
        self.synced = False
        self.snapshots = 0

    @property
    def symbols(self) -> Mapping[tuple[str, str], SymbolState]:
        return self._symbols

    @property
    def seqs(self) -> Mapping[int, int]:
        """shard -> the last sequence applied (the snapshot's, or a delta's after it)."""
        return self._seqs

    @property
    def top(self) -> tuple[TopEntry, ...]:
        """The Top-K of the last snapshot (``top_by`` says by what)."""
        return self._top

    def get(self, venue: str, symbol: str) -> SymbolState | None:
        return self._symbols.get((venue, symbol))

    # -- written by the protocol core ------------------------------------------------------

    def apply_snapshot(self, snap: Snapshot, *, verify: bool) -> tuple[int, int]:
        """Restart from ``snap``; returns how many of its entries were verified, and how many
        failed their checksum."""
        self.epoch = snap.epoch
        self.version = snap.version
        self._seqs = dict(snap.shard_seq)
        self._symbols = {(s.venue, s.symbol): s for s in snap.symbols}
        self._top = tuple(snap.top)
        self.top_by = snap.top_by
        self.snapshots += 1
        if not verify:
            return 0, 0
        checks = [verify_checksum(s) for s in snap.symbols]
        return checks.count(Check.OK), checks.count(Check.MISMATCH)

    def apply_delta(self, d: Delta, *, verify: bool) -> Applied:
        self._seqs[d.shard] = d.seq
        return apply_entries(self._symbols, d, verify=verify)
