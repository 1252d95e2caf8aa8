"""/admin/feature-flags: admin only, audited, stored in JetStream KV, applied live."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio
from gw_support import (
    FakeAggregator,
    Keys,
    caught_up,
    http_port,
    no_hole,
    running_gateway,
    sdk,
    updates_until,
)

from xypipe.client import Degraded, DeltaApplied, Update

FAST_DEGRADE = {"enter": [0.5, 0.75, 0.9], "leave": [0.25, 0.5, 0.7], "dwell_ms": 100,
                "sample_ms": 20}


async def http(port: int, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, Any]:
    def call() -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    return await trio.to_thread.run_sync(call)


async def test_flags_need_the_admin_role_and_every_attempt_is_audited(
    nats_server, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        path = "/admin/feature-flags"
        assert (await http(port, "GET", path))[0] == 401
        assert (await http(port, "GET", path, "not-a-token"))[0] == 401
        status, body = await http(port, "PUT", path, keys.token("bob"),
                                  {"name": "gateway.force_level", "value": 2})
        assert status == 403 and "lacks role 'admin'" in body["error"]
        admin = keys.token("root", roles=["admin"])
        status, body = await http(port, "PUT", path, admin,
                                  {"name": "gateway.force_level", "value": 7})
        assert status == 400 and "expected null or an integer 0..3, got 7" in body["error"]
        status, body = await http(port, "PUT", path, admin, {"name": "nope", "value": 1})
        assert status == 400 and "unknown flag 'nope'" in body["error"]
        status, body = await http(port, "PUT", path, admin,
                                  {"name": "gateway.disabled_groups", "value": ["rates"]})
        assert status == 200 and body["old"] == [] and body["flag"]["value"] == ["rates"]
        assert body["flag"]["updated_by"] == "root" and body["flag"]["revision"] >= 1
        status, body = await http(port, "GET", path, admin)
        assert status == 200
        # The stored value (the KV bucket) is what every instance reads.
        kv = await runner.nats.jetstream().kv("xy_feature_flags", create=False)
        entry = await kv.get("gateway.disabled_groups")
        assert entry is not None
    denied = [d for d in json_logs.find(audit=True, outcome="denied")
              if d.get("action") == "admin"]
    assert len(denied) == 3
    assert {d["code"] for d in denied} == {"XY-ADM-001", "XY-ADM-002"}
    changed = json_logs.find(audit=True, action="admin.flag", outcome="allowed")
    assert len(changed) == 1
    assert changed[0]["sub"] == "root" and changed[0]["old"] == []
    assert changed[0]["new"] == ["rates"] and changed[0]["at_us"] > 0
    assert len(json_logs.find(audit=True, action="admin.flag", outcome="invalid")) == 2


async def test_flags_apply_live_to_connected_clients(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx", "rates"])
    async with running_gateway(nats_server.url, keys, degrade=FAST_DEGRADE) as runner, \
            sdk(http_port(runner), keys.token()) as c:
        port = http_port(runner)
        admin = keys.token("root", roles=["admin"])
        path = "/admin/feature-flags"
        await c.subscribe("fx", "rates")
        seen: list[Update] = await updates_until(
            c, lambda u: {"fx", "rates"} <= {g for g, b in c.books.items() if b.synced})
        await aggregator.publish_deltas(2, ["fx"])  # every symbol with its full depth
        seen += await caught_up(c, "fx", aggregator.seq["fx"])

        # Force L2: the client is told, and its deltas come trimmed (and are not verified).
        assert (await http(port, "PUT", path, admin,
                           {"name": "gateway.force_level", "value": 2}))[0] == 200
        seen += await updates_until(c, lambda u: isinstance(u, Degraded))
        d = seen[-1]
        assert isinstance(d, Degraded) and d.level == 2 and "operator" in d.reason
        await aggregator.publish_deltas(2, ["fx"])
        seen += await updates_until(c, lambda u: isinstance(u, DeltaApplied))
        trimmed = seen[-1]
        assert isinstance(trimmed, DeltaApplied) and trimmed.symbols
        assert all(s.trimmed for s in trimmed.symbols)
        assert c.statistics().trimmed >= len(trimmed.symbols)
        # The client keeps the depth it held beyond the trimmed best level.
        book = c.book("fx")
        assert book is not None
        assert all(len(s.bids) == aggregator.depth for s in book.symbols.values())

        # Disable a group: it is reported paused and stops; the other keeps flowing.
        assert (await http(port, "PUT", path, admin,
                           {"name": "gateway.disabled_groups", "value": ["rates"]}))[0] == 200
        seen += await updates_until(c, lambda u: isinstance(u, Degraded)
                                    and u.paused_groups == ("rates",))
        rates = c.book("rates")
        assert rates is not None
        rates_before = dict(rates.seqs)
        await aggregator.publish_deltas(3)
        seen += await caught_up(c, "fx", aggregator.seq["fx"])
        assert dict(rates.seqs) == rates_before

        # Clear both: back to L0 after the dwell, and the group resumes from a snapshot.
        await http(port, "PUT", path, admin, {"name": "gateway.force_level", "value": None})
        await http(port, "PUT", path, admin, {"name": "gateway.disabled_groups", "value": []})
        seen += await updates_until(c, lambda u: isinstance(u, Degraded) and u.level == 0
                                    and not u.paused_groups)
        await aggregator.publish_snapshots(["rates"])
        await aggregator.publish_deltas(2)
        seen += await caught_up(c, "rates", aggregator.seq["rates"])
        no_hole(seen)
        assert c.statistics().checksum_mismatches == 0
