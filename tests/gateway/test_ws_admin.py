"""/admin/feature-flags: admin only, audited, stored in JetStream KV, applied live."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway, ws_client

from xypipe.contracts import GroupRef, Ping, Subscribe

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
            ws_client(http_port(runner)) as c:
        port = http_port(runner)
        admin = keys.token("root", roles=["admin"])
        path = "/admin/feature-flags"
        await c.hello(keys.token())
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx"), GroupRef(group="rates")]))
        await c.recv_until(lambda f: {"fx", "rates"} <= set(c.snapshots))

        # Force L2: the client is told, and its deltas come trimmed.
        assert (await http(port, "PUT", path, admin,
                           {"name": "gateway.force_level", "value": 2}))[0] == 200
        d = await c.recv_until(lambda f: f.HasField("degrade"))
        assert d.degrade.level == 2 and "operator" in d.degrade.reason
        await aggregator.publish_deltas(2, ["fx"])
        f = await c.recv_until(lambda f: len(f.deltas) > 0)
        assert all(s.trimmed and len(s.bids) <= 1 for s in f.deltas[0].symbols if s.bids)

        # Disable a group: it is reported paused and stops; the other keeps flowing.
        assert (await http(port, "PUT", path, admin,
                           {"name": "gateway.disabled_groups", "value": ["rates"]}))[0] == 200
        await c.recv_until(lambda f: f.HasField("degrade")
                           and list(f.degrade.paused_groups) == ["rates"])
        rates_before = c.last[("rates", 0)]
        await aggregator.publish_deltas(3)
        await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
        assert c.last[("rates", 0)] == rates_before

        # Clear both: back to L0 after the dwell, and the group resumes from a snapshot.
        await http(port, "PUT", path, admin, {"name": "gateway.force_level", "value": None})
        await http(port, "PUT", path, admin, {"name": "gateway.disabled_groups", "value": []})
        with trio.fail_after(10):
            while not (c.degrades[-1].level == 0 and not c.degrades[-1].paused_groups):
                await c.send(ping=Ping())
                await c.recv()
        await aggregator.publish_snapshots(["rates"])
        await aggregator.publish_deltas(2)
        await c.recv_until(lambda f: c.last[("rates", 0)][1] == aggregator.seq["rates"])
