"""Mixed contract versions, live: producers one version ahead and one behind, each its own
process on a real nats-server, through the current gateway to the current ``xypipe.client`` and
a browser-like WebSocket client. The live counterpart of the buf breaking check.

Newer producer (``xy.md.vnext``: ``producer_note`` appended to SymbolState, Delta and Snapshot):
the gateway forwards it unchanged (the note is still there when the client's bytes are read
with the newer contract), the current decoders ignore it and count it as unknown
(``contract_unknown_fields_total``, ``ClientStatistics.unknown_fields``), every sequence
continues and every checksum verifies.

Older producer (``xy.md.vprev``: no ``fence``): accepted, read as fence 0 — "no lease", the
documented default (docs/protocol.md) — and applied like any other delta.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from gw_support import (
    Keys,
    caught_up,
    http_port,
    no_hole,
    running_gateway,
    sdk,
    ws_client,
)
from md_publisher import note
from proto_versions import NOTE, load

from xypipe.contracts import Delta, GroupRef, Subscribe

PUBLISHER = Path(__file__).with_name("md_publisher.py")


async def publish(nats_url: str, py: Path, version: str, group: str, *, first: int, count: int,
                  snapshot: bool = False) -> None:
    """One run of the other-version producer, a process of its own."""
    cmd = [sys.executable, str(PUBLISHER), nats_url, str(py), version, group,
           "--first", str(first), "--count", str(count)]
    with trio.fail_after(60):
        await trio.run_process(cmd + (["--snapshot"] if snapshot else []))


async def test_a_newer_producer_reaches_current_clients_unchanged(
        nats_server, keys: Keys, contract_versions: Path) -> None:
    vnext = load(contract_versions, "vnext")
    # The snapshot first (the gateway reads it from the stream); the deltas once it listens.
    await publish(nats_server.url, contract_versions, "vnext", "fx", first=1, count=0,
                  snapshot=True)
    async with running_gateway(nats_server.url, keys, admin=False) as runner:
        port = http_port(runner)
        async with ws_client(port) as raw, sdk(port, keys.token("alice")) as client:
            assert (await raw.hello(keys.token("bob"))).HasField("welcome")
            await raw.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            first = await raw.recv_until(lambda f: len(f.snapshots) > 0)
            await client.subscribe("fx")
            seen = await caught_up(client, "fx", 0)
            await publish(nats_server.url, contract_versions, "vnext", "fx", first=1, count=3)
            seen += await caught_up(client, "fx", 3)
            await publish(nats_server.url, contract_versions, "vnext", "fx", first=4,
                          count=10)
            seen += await caught_up(client, "fx", 13)
            await raw.recv_until(lambda f: raw.last[("fx", 0)][1] == 13)
            stats = client.statistics()
        no_hole(seen)
        # The current client ignored the newer fields, counted them, and verified every entry.
        assert stats.checksum_mismatches == 0 and stats.checksums_verified >= 3 * 13
        assert stats.unknown_fields > 0
        assert stats.skipped.get("gap", 0) == 0
        book = client.book("fx")
        assert book is not None and book.seqs[0] == 13
        # Forwarded unchanged: read with the newer contract, the bytes the gateway sent still
        # carry what the newer producer wrote.
        snap = vnext.Snapshot.FromString(first.snapshots[0].SerializeToString())
        assert getattr(snap, NOTE) == note("snapshot", 0)
        deltas = [d for f in raw.frames for d in f.deltas]
        assert [d.seq for d in deltas] == list(range(1, 14))
        for d in deltas:
            newer = vnext.Delta.FromString(d.SerializeToString())
            assert getattr(newer, NOTE) == note("delta", d.seq)
            assert {getattr(s, NOTE) for s in newer.symbols} == {note("entry", d.seq)}
        assert raw.deltas == len(deltas) and not raw.errors
        m = runner.metrics
        assert (m.sample("contract_unknown_fields_total", {"message": "xy.md.v1.Delta"}) or 0) > 0


async def test_an_older_producer_without_fence_is_read_as_unfenced(
        nats_server, keys: Keys, contract_versions: Path) -> None:
    vprev = load(contract_versions, "vprev")
    assert "fence" not in vprev.Delta.DESCRIPTOR.fields_by_name  # really the older contract
    await publish(nats_server.url, contract_versions, "vprev", "rates", first=1, count=0,
                  snapshot=True)
    async with running_gateway(nats_server.url, keys, admin=False) as runner:
        port = http_port(runner)
        async with ws_client(port) as raw, sdk(port, keys.token("alice")) as client:
            assert (await raw.hello(keys.token("bob"))).HasField("welcome")
            await raw.send(subscribe=Subscribe(groups=[GroupRef(group="rates")]))
            first = await raw.recv_until(lambda f: len(f.snapshots) > 0)
            await client.subscribe("rates")
            seen = await caught_up(client, "rates", 0)
            await publish(nats_server.url, contract_versions, "vprev", "rates", first=1, count=2)
            seen += await caught_up(client, "rates", 2)
            await publish(nats_server.url, contract_versions, "vprev", "rates", first=3,
                          count=5)
            seen += await caught_up(client, "rates", 7)
            await raw.recv_until(lambda f: raw.last[("rates", 0)][1] == 7)
            stats = client.statistics()
        no_hole(seen)
        assert stats.checksum_mismatches == 0 and stats.unknown_fields == 0
        assert first.snapshots[0].fence == 0
        deltas: list[Delta] = [d for f in raw.frames for d in f.deltas]
        assert deltas and all(d.fence == 0 for d in deltas) and deltas[-1].seq == 7
        assert not raw.errors
        m = runner.metrics
        assert not m.sample("gateway_deltas_total", {"verdict": "stale_fence"})
