"""Gateway workers: ``[processes.gateway] workers = 2`` under one real ``xypipe run``.

Both copies bind the gateway's port with SO_REUSEPORT; browsers (SDK clients here, which check
every sequence and checksum) land on either and get every group. Each copy serves its own
/metrics on ``metrics_port + index`` with a ``worker`` label, so the spread is read per worker.
A copy killed with SIGKILL is restarted alone; its clients reconnect to either copy and resume
without a hole. Feature flags (the KV bucket) and the token's ACL hold on both copies.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from gw_support import SNAPSHOT_STREAM, FakeAggregator, Keys, no_hole, sdk
from prometheus_client.parser import text_string_to_metric_families
from test_demo import free_port, http_get, wait_healthy
from test_supervisor import Tree, _alive, _is, running_tree

from xypipe._gateway._flags import DISABLED_GROUPS, FlagValue
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe.client import Client as SdkClient
from xypipe.client import Connected, Degraded, ErrorReceived, Update

pytestmark = pytest.mark.nats

GROUPS = ("fx", "rates", "crypto")
CLIENTS = 12


@asynccontextmanager
async def gateway_workers(tmp_path: pathlib.Path, nats_url: str, keys: Keys, **options: Any
                          ) -> AsyncIterator[tuple[Tree, dict[str, int]]]:
    """An ``xypipe run`` of two gateway workers on ``nats_url`` (the gateway stage's
    ``options`` added); the ports: ``ws`` (shared), ``w0``/``w1`` (each worker's own /metrics)
    and ``sup`` (the supervisor's)."""
    ports = {"ws": free_port(), "sup": free_port()}
    # Two consecutive free ports for the workers' private endpoints.
    while True:
        base = free_port()
        if base < 65535 and _free(base + 1):
            break
    ports["w0"], ports["w1"] = base, base + 1
    gateway = {
        "use": "gateway", "name": "gateway", "public_key": str(keys.public_path),
        "allowed_origins": ["*"], "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE,
        "snapshot_stream": SNAPSHOT_STREAM, **options,
    }
    text = (
        f'[nats]\nurl = "{nats_url}"\n[http]\nport = {ports["sup"]}\n'
        f"[processes.gateway]\nworkers = 2\nmetrics_port = {base}\n"
        f'http = {{ port = {ports["ws"]} }}\n'
        'restart = { policy = "on-failure", max_restarts = 5, window_s = 60, backoff_ms = 50 }\n'
        '[pipelines.gateway]\nprocess = "gateway"\n'
        '[[pipelines.gateway.stages]]\nuse = "nats_source"\nname = "md"\n'
        'subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]\n'
        "[[pipelines.gateway.stages]]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in gateway.items())
    )
    path = tmp_path / "workers.toml"
    path.write_text(text)
    async with running_tree(path) as tree:
        for key in ("w0", "w1", "sup"):
            await wait_healthy(ports[key], 60)
        yield tree, ports
        os.killpg(tree.proc.pid, signal.SIGTERM)


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def worker_samples(port: int, name: str, **labels: str) -> dict[str, float]:
    """``name``'s samples (with ``labels``) on one worker's own /metrics, summed by their
    ``worker`` label."""
    status, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name and labels.items() <= s.labels.items():
                out[s.labels["worker"]] = out.get(s.labels["worker"], 0.0) + s.value
    return out


async def both(ports: dict[str, int], name: str, **labels: str) -> dict[str, float]:
    """``name`` on both workers' own /metrics, by worker."""
    return {**await worker_samples(ports["w0"], name, **labels),
            **await worker_samples(ports["w1"], name, **labels)}


async def supervisor_samples(port: int, name: str) -> dict[str, float]:
    _, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
    return {s.labels["process"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


class Fleet:
    """Many SDK clients on the shared port, each collecting its updates."""

    def __init__(self) -> None:
        self.clients: list[SdkClient] = []
        self.updates: list[list[Update]] = []
        self._changed = trio.Event()

    async def read(self, i: int) -> None:
        async for u in self.clients[i]:
            self.updates[i].append(u)
            self._changed.set()

    async def until(self, done: Any, within: float = 30) -> None:
        """Wait until ``done(i)`` holds for every client (a hang guard, not a timed check)."""
        await self.until_all(lambda: all(done(i) for i in range(len(self.clients))), within)

    async def until_all(self, done: Any, within: float = 30) -> None:
        with trio.fail_after(within):
            while not done():
                self._changed = trio.Event()
                await self._changed.wait()

    def reconnected(self, i: int) -> Connected | None:
        return next((u for u in self.updates[i] if isinstance(u, Connected) and u.reconnects),
                    None)

    def at(self, i: int, group: str, seq: int) -> bool:
        book = self.clients[i].book(group)
        return book is not None and book.synced and book.seqs.get(0) == seq


@asynccontextmanager
async def fleet(port: int, token: str, groups: Sequence[str] = GROUPS,
                n: int = CLIENTS) -> AsyncIterator[Fleet]:
    f = Fleet()
    async with AsyncExitStack() as stack:
        for _ in range(n):
            f.clients.append(await stack.enter_async_context(sdk(port, token)))
            f.updates.append([])
        async with trio.open_nursery() as nursery:
            for i, client in enumerate(f.clients):
                nursery.start_soon(f.read, i)
                await client.subscribe(*groups)
            yield f
            nursery.cancel_scope.cancel()


async def test_workers_share_the_port_and_every_client_gets_every_group_flags_and_acl(
    tmp_path, nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots()
    async with gateway_workers(tmp_path, nats_server.url, keys) as (tree, ports):
        status, body = await trio.to_thread.run_sync(http_get, ports["sup"], "/healthz")
        assert status == 200
        assert json.loads(body)["processes"] == {"gateway.0": True, "gateway.1": True}
        for i in (0, 1):
            _, doc = await trio.to_thread.run_sync(http_get, ports[f"w{i}"], "/healthz")
            assert json.loads(doc)["worker"] == i
        async with fleet(ports["ws"], keys.token()) as f:
            await aggregator.publish_deltas(3)
            await f.until(lambda i: all(f.at(i, g, aggregator.seq[g]) for g in GROUPS))
            # The kernel spread the connections: both copies serve some, each says which it is.
            active = await both(ports, "ws_active")
            assert set(active) == {"0", "1"}
            assert all(v > 0 for v in active.values()) and sum(active.values()) == CLIENTS

            # A feature flag written to the bucket reaches every client, on either worker.
            kv = await aggregator.nc.jetstream().kv("xy_feature_flags", history=16)
            await kv.put(DISABLED_GROUPS, FlagValue(DISABLED_GROUPS, ["rates"], "ops").encode())
            await f.until(lambda i: any(isinstance(u, Degraded) and u.paused_groups == ("rates",)
                                        for u in f.updates[i]))
            # (Both workers serve some of these clients: both applied the change.)
            for updates in f.updates:
                no_hole(updates)

        # The token's ACL holds on both workers: enough clients that both serve some.
        narrow = keys.token("carol", ["xy.md.*.fx", "xy.md.*.fx.>"])
        denied_before = await both(ports, "acl_denied_total", action="subscribe")
        async with fleet(ports["ws"], narrow, ("fx", "crypto")) as f:
            await f.until(lambda i: any(isinstance(u, ErrorReceived) and u.group == "crypto"
                                        and u.name == "ERROR_CODE_ACL_DENIED"
                                        for u in f.updates[i]))
            denied = await both(ports, "acl_denied_total", action="subscribe")
            more = {w: denied[w] - denied_before.get(w, 0.0) for w in denied}
            assert set(more) == {"0", "1"} and all(v > 0 for v in more.values())
            assert sum(more.values()) == CLIENTS
            assert all(c.book("crypto") is None for c in f.clients)
    assert not tree.coded("XY-SUP-022")


async def test_a_killed_worker_is_restarted_alone_and_its_clients_resume_without_a_hole(
    tmp_path, nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots()
    async with gateway_workers(tmp_path, nats_server.url, keys) as (tree, ports):
        w0, w1 = await tree.started_pid("gateway.0"), await tree.started_pid("gateway.1")
        async with fleet(ports["ws"], keys.token()) as f:
            await aggregator.publish_deltas(2)
            await f.until(lambda i: all(f.at(i, g, aggregator.seq[g]) for g in GROUPS))
            on_w0 = int((await worker_samples(ports["w0"], "ws_active"))["0"])
            assert 0 < on_w0 < CLIENTS

            async with trio.open_nursery() as market:
                stop = trio.Event()

                async def tick() -> None:
                    # The market moves on while the worker is down and its clients come back.
                    while not stop.is_set():
                        await aggregator.publish_deltas(1)
                        with trio.move_on_after(0.03):
                            await stop.wait()

                market.start_soon(tick)
                os.kill(w0, signal.SIGKILL)
                await tree.wait_for(lambda x: _is(x, "process restarted", "gateway.0"))
                await wait_healthy(ports["w0"], 60)
                await f.until_all(lambda: sum(f.reconnected(i) is not None
                                              for i in range(CLIENTS)) >= on_w0)
                stop.set()
            await aggregator.publish_deltas(1)
            await f.until(lambda i: all(f.at(i, g, aggregator.seq[g]) for g in GROUPS))

            back = [c for c in (f.reconnected(i) for i in range(CLIENTS)) if c is not None]
            assert len(back) == on_w0  # exactly the killed worker's clients reconnected
            for again in back:
                assert set(again.resumed) == set(GROUPS)  # resumed, not subscribed afresh
            for i, updates in enumerate(f.updates):
                no_hole(updates)
                assert f.clients[i].statistics().checksum_mismatches == 0
            resumes = 0.0
            for i in (0, 1):
                resumes += sum((await worker_samples(ports[f"w{i}"],
                                                     "ws_resumes_total")).values())
            # Every group of every moved client was resumed (bridged or from a snapshot).
            assert resumes >= on_w0 * len(GROUPS)
            # The clients that came back while worker 0 was down landed on worker 1, whose
            # history (fed from NATS like every worker's) bridged their points.
            bridged = await worker_samples(ports["w1"], "ws_resumes_total", outcome="bridged")
            assert bridged.get("1", 0.0) > 0
        # Only the killed worker was restarted; the other kept its pid and its clients.
        assert _alive(w1) and not tree.supervisor("process restarted", "gateway.1")
        restarts = await supervisor_samples(ports["sup"], "process_restarts_total")
        assert restarts == {"gateway.0": 1.0, "gateway.1": 0.0}

