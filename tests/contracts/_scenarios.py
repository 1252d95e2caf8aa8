"""Running the scenario vectors of ``proto/scenarios/`` against the Python consumers.

Two harnesses, fed the same vector steps:

- :class:`GatewaySide` drives the gateway's hub through its public methods only (``on_snapshot``,
  ``on_delta``, ``subscribe``, ``resume``, ``build``, ``stats``): messages as the aggregator
  publishes them on NATS, one subscriber whose frames are decoded;
- :class:`ClientSide` drives the client SDK's protocol core (:class:`ClientCore`) with the
  ``ServerFrame`` bytes a gateway would send, and reads what it concluded from its updates,
  its books and the frames it answers with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xypipe._client._core import ClientCore, CoreOptions
from xypipe._gateway._hub import Hub, Outbox
from xypipe.client import Connected, DeltaApplied, DeltaSkipped, SnapshotApplied, Update
from xypipe.contracts import (
    ClientFrame,
    Delta,
    PriceLevel,
    ResumePoint,
    ServerFrame,
    Snapshot,
    SymbolState,
    Welcome,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "proto" / "scenarios"


def load(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / f"{name}.json").read_text())  # type: ignore[no-any-return]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in items]


# --------------------------------------------------------------------------- messages


def snapshot(group: str, v: dict[str, Any]) -> Snapshot:
    seqs = {int(k): q for k, q in v["shard_seq"].items()}
    return Snapshot(group=group, epoch=v["epoch"], version=v.get("version", 1), shard_seq=seqs,
                    shards=v.get("shards", len(seqs)))


def delta(group: str, v: dict[str, Any]) -> Delta:
    return Delta(group=group, shard=v["shard"], epoch=v["epoch"], first_seq=v["first_seq"],
                 seq=v["seq"])


def state(v: dict[str, Any]) -> SymbolState:
    """A vector's symbol state (levels ``[price, size]`` or ``[price, size, orders]``)."""
    def levels(rows: list[list[int]]) -> list[PriceLevel]:
        return [PriceLevel(price=r[0], size=r[1], orders=r[2] if len(r) > 2 else 0) for r in rows]

    return SymbolState(
        venue=v["venue"], symbol=v["symbol"], seq=v["seq"], last=v["last"],
        last_size=v["last_size"], vol=v["vol"], oi=v["oi"], flags=v["flags"],
        total_trades=v["total_trades"], bids=levels(v["bids"]), asks=levels(v["asks"]),
        checksum=v.get("checksum", 0), trimmed=v.get("trimmed", False))


def canonical_fields(s: SymbolState) -> dict[str, Any]:
    return {"venue": s.venue, "symbol": s.symbol, "seq": s.seq, "last": s.last,
            "last_size": s.last_size, "vol": s.vol, "oi": s.oi, "flags": s.flags,
            "total_trades": s.total_trades, "checksum": s.checksum, "trimmed": s.trimmed,
            "bids": [[lv.price, lv.size] for lv in s.bids],
            "asks": [[lv.price, lv.size] for lv in s.asks]}


# --------------------------------------------------------------------------- the gateway


def ws_payload(data: bytes) -> bytes:
    """The payload of one unmasked server-to-client WebSocket frame."""
    n = data[1] & 0x7F
    return data[2:] if n < 126 else data[4:] if n == 126 else data[10:]


def frame_summary(f: ServerFrame | None) -> dict[str, Any] | None:
    """A frame as the vectors write what a subscriber is sent."""
    if f is None:
        return None
    snaps = [{"epoch": s.epoch, "shard_seq": {str(k): q for k, q in sorted(s.shard_seq.items())}}
             for s in f.snapshots]
    assert len(snaps) <= 1, f"one snapshot per group per frame, got {snaps}"
    return {"snapshot": snaps[0] if snaps else None,
            "deltas": [[d.epoch, d.shard, d.seq] for d in f.deltas]}


def ranges(deltas: list[list[int]]) -> list[list[int]]:
    """``[epoch, shard, seq]`` runs folded into ``[epoch, shard, first, last]``."""
    out: list[list[int]] = []
    for epoch, shard, seq in deltas:
        if out and out[-1][:2] == [epoch, shard] and out[-1][3] + 1 == seq:
            out[-1][3] = seq
        else:
            out.append([epoch, shard, seq, seq])
    return out


class GatewaySide:
    """The hub with one subscriber (``ob``) of group ``g``."""

    def __init__(self, *, history: int = 256, max_gap: int = 256) -> None:
        self.hub = Hub(history=history, max_gap=max_gap)
        self.ob = Outbox(1)
        self.now = 0.0

    def subscribe(self, group: str = "g") -> None:
        self.hub.subscribe(self.ob, group, frozenset())

    def resume(self, group: str, points: list[list[int]]) -> str:
        pts = [ResumePoint(group=group, shard=s, epoch=e, seq=q) for s, e, q in points]
        return str(self.hub.resume(self.ob, group, pts).value)

    def feed_snapshot(self, snap: Snapshot) -> str:
        """``apply`` or the reason it was rejected."""
        before = dict(self.hub.stats.rejected)
        self.now += 0.01
        self.hub.on_snapshot(f"xy.md.snapshot.{snap.group}", snap.SerializeToString(), self.now)
        return self._verdict(before, "snapshot")

    def feed_delta(self, d: Delta) -> str:
        before = self.hub.stats.verdict_counts()
        self.now += 0.01
        self.hub.on_delta(f"xy.md.tick.{d.group}.{d.shard}", d.SerializeToString(), self.now)
        after = self.hub.stats.verdict_counts()
        changed = [v for v in after if after[v] != before.get(v, 0)]
        assert len(changed) == 1, f"one verdict per delta, got {changed}"
        return changed[0]

    def _verdict(self, before: dict[tuple[str, str], int], kind: str) -> str:
        after = self.hub.stats.rejected
        new = [reason for (k, reason), n in after.items()
               if k == kind and n != before.get((k, reason), 0)]
        return new[0] if new else "apply"

    def next_frame(self) -> ServerFrame | None:
        built = self.hub.build(self.ob, 1)
        if built is None:
            return None
        return ServerFrame.FromString(ws_payload(built.data))


# --------------------------------------------------------------------------- the client


class ClientSide:
    """The client SDK's core, connected, subscribed to ``groups``."""

    def __init__(self, groups: list[str], *, max_gap: int = 256) -> None:
        self.core = ClientCore(CoreOptions(max_gap=max_gap))
        self.core.subscribe(groups)
        self.now = 0.0
        self.connect()

    def connect(self) -> list[ClientFrame]:
        """A (re)connection: hello, Welcome; returns the frames the core answers with."""
        self.core.closed()
        self.core.open("token")
        welcome = ServerFrame(welcome=Welcome(session_id="s", protocol_version=1,
                                              heartbeat_ms=5000))
        updates = self.receive(welcome)
        assert isinstance(updates[0], Connected)
        return [ClientFrame.FromString(b) for b in self.core.take_outgoing()]

    def receive(self, frame: ServerFrame) -> list[Update]:
        self.now += 0.01
        return self.core.receive(frame.SerializeToString(), self.now, 1)

    def resyncing(self, group: str) -> bool:
        book = self.core.book(group)
        waiting = self.core.tracker.is_resyncing(group)
        assert book is None or book.synced != waiting, "a book is live exactly when not waiting"
        return waiting

    def step(self, step: dict[str, Any], where: str) -> None:
        """Feed one vector step and check what its ``client`` part says (if anything)."""
        group = step.get("group", "g")
        expect = step.get("client", {})
        if expect is None:
            return  # a message the gateway never forwards to a client
        if "snapshot" in step:
            updates = self.receive(ServerFrame(snapshots=[snapshot(group, step["snapshot"])]))
            applied = [u for u in updates if isinstance(u, SnapshotApplied)]
            assert len(applied) == 1, where
            replayed = [[u.epoch, u.shard, u.seq] for u in updates
                        if isinstance(u, DeltaApplied) and u.replayed]
            assert applied[0].replayed == len(replayed), where
            if expect:
                assert replayed == expect["replayed"], f"{where}: replayed"
        else:
            updates = self.receive(ServerFrame(deltas=[delta(group, step["delta"])]))
            verdicts = ["apply" for u in updates if isinstance(u, DeltaApplied)] + [
                u.verdict for u in updates if isinstance(u, DeltaSkipped)]
            assert len(verdicts) == 1, f"{where}: {updates}"
            if expect:
                assert verdicts[0] == expect["verdict"], where
        if expect:
            assert self.resyncing(group) == expect["resyncing"], f"{where}: resyncing"
