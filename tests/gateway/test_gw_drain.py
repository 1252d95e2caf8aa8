"""Graceful drain of a gateway worker under one real ``xypipe run`` (``workers = 2``).

SIGTERM to one worker, 50 SDK clients connected while the market ticks: the worker turns
not-ready first, tells each of its clients to move (GoAway) spread over ``drain_s``; each client
reconnects once — through the shared port, to the other worker — and resumes bridged from that
worker's history: no hole, no repeat, no epoch change, no snapshot. The worker exits drained and
the supervisor replaces it without counting a failure. An admin drain request without the role
is refused and audited; with it, the worker drains.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from contextlib import AsyncExitStack

import pytest
import trio
from gw_support import FakeAggregator, Keys, no_hole, sdk
from test_demo import http_get, wait_healthy
from test_gw_workers import GROUPS, Fleet, gateway_workers, supervisor_samples, worker_samples
from test_supervisor import Tree, _is

from xypipe.client import (
    Connected,
    Degraded,
    DeltaApplied,
    DeltaSkipped,
    MoveRequested,
    SnapshotApplied,
    Update,
)

pytestmark = pytest.mark.nats

CLIENTS = int(os.environ.get("DRAIN_CLIENTS", "50"))
DRAIN_S = 3.0
CLOSE_IN_MS = 1000


def continuous(updates: list[Update]) -> None:
    """Per stream: one epoch, and every delta starts right after the one before it."""
    last: dict[tuple[str, int], tuple[int, int]] = {}
    for u in updates:
        if isinstance(u, SnapshotApplied):
            for shard, seq in u.shard_seq:
                last[(u.group, shard)] = (u.epoch, seq)
        elif isinstance(u, DeltaApplied):
            key = (u.group, u.shard)
            if key in last:
                epoch, seq = last[key]
                assert u.epoch == epoch, (key, epoch, u)
                # first_seq 0: a single delta (not a merge of first_seq..seq).
                assert (u.first_seq or u.seq) == seq + 1, (key, seq, u)
            last[key] = (u.epoch, u.seq)


def worst_gap(times: list[tuple[float, Update]], around: float) -> float:
    """The longest wait between two applied deltas of a client from ``around`` on."""
    ts = [t for t, u in times if isinstance(u, DeltaApplied) and t >= around - 1.0]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


async def healthz(port: int) -> tuple[int, dict[str, object]]:
    status, body = await trio.to_thread.run_sync(http_get, port, "/healthz")
    return status, json.loads(body)


async def post(port: int, path: str, token: str | None) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            conn.request("POST", path, body=b"", headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    return await trio.to_thread.run_sync(call)


def last_pid(tree: Tree, process: str) -> int:
    return int([x for x in tree.lines if _is(x, "process started", process)][-1]["pid"])


async def test_sigterm_drains_a_worker_its_clients_move_once_and_resume_without_a_hole(
    tmp_path, nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots()
    async with gateway_workers(tmp_path, nats_server.url, keys, drain_s=DRAIN_S,
                               drain_close_in_ms=CLOSE_IN_MS, history=4096) as (tree, ports):
        w0 = await tree.started_pid("gateway.0")
        fl = Fleet()
        times: list[list[tuple[float, Update]]] = [[] for _ in range(CLIENTS)]
        async with AsyncExitStack() as stack:
            for _ in range(CLIENTS):
                fl.clients.append(await stack.enter_async_context(sdk(ports["ws"],
                                                                      keys.token())))
                fl.updates.append([])

            async def read(i: int) -> None:
                async for u in fl.clients[i]:
                    times[i].append((trio.current_time(), u))
                    fl.updates[i].append(u)
                    fl._changed.set()

            async with trio.open_nursery() as nursery:
                for i, client in enumerate(fl.clients):
                    nursery.start_soon(read, i)
                    await client.subscribe(*GROUPS)
                await aggregator.publish_deltas(2)
                await fl.until(lambda i: all(fl.at(i, g, aggregator.seq[g]) for g in GROUPS))
                on_w0 = int((await worker_samples(ports["w0"], "ws_active"))["0"])
                assert 0 < on_w0 < CLIENTS

                stop = trio.Event()
                health_seen: list[tuple[int, dict[str, object]]] = []

                async def market() -> None:
                    # About 30 ticks a second per group while the worker drains.
                    while not stop.is_set():
                        await aggregator.publish_deltas(1)
                        with trio.move_on_after(0.03):
                            await stop.wait()

                async def watch_health() -> None:
                    # The draining worker's own endpoint (its private port) during the moves.
                    while not stop.is_set():
                        first_move = any(isinstance(u, MoveRequested)
                                         for ups in fl.updates for u in ups)
                        if first_move:
                            try:
                                health_seen.append(await healthz(ports["w0"]))
                            except OSError:
                                pass
                            return
                        fl._changed = trio.Event()
                        await fl._changed.wait()

                nursery.start_soon(market)
                nursery.start_soon(watch_health)
                sigterm_at = trio.current_time()
                os.kill(w0, signal.SIGTERM)
                await tree.wait_for(lambda x: _is(x, "process drained; starting a fresh copy",
                                                  "gateway.0"))
                await fl.until_all(lambda: sum(
                    any(isinstance(u, Connected) and u.reconnects for u in ups)
                    for ups in fl.updates) >= on_w0)
                await wait_healthy(ports["w0"], 60)  # the fresh copy
                stop.set()
                await aggregator.publish_deltas(1)
                await fl.until(lambda i: all(fl.at(i, g, aggregator.seq[g]) for g in GROUPS))
                nursery.cancel_scope.cancel()

            # Not ready first: when the first client was told to move, the worker's /healthz
            # already said why it is not ready.
            assert health_seen, "no health read while draining"
            status, doc = health_seen[0]
            assert status == 503 and doc["ready"] is False
            assert str(doc["reasons"][0]).startswith("draining: SIGTERM")  # type: ignore[index]

            moved = [i for i in range(CLIENTS)
                     if any(isinstance(u, MoveRequested) for u in fl.updates[i])]
            assert len(moved) == on_w0  # every client of the drained worker, no other
            gaps = []
            move_times = []
            for i in range(CLIENTS):
                stats = fl.clients[i].statistics()
                assert stats.moves <= 1 and stats.connects <= 2  # at most one reconnect each
                no_hole(fl.updates[i])
                continuous(fl.updates[i])
                assert stats.checksum_mismatches == 0
                assert not any(isinstance(u, DeltaSkipped) for u in fl.updates[i])
            for i in moved:
                told = next(t for t, u in times[i] if isinstance(u, MoveRequested))
                move_times.append(told)
                again = next(u for u in fl.updates[i] if isinstance(u, Connected)
                             and u.reconnects)
                assert set(again.resumed) == set(GROUPS) and not again.subscribed
                # Bridged by the other worker's history: no snapshot after the move.
                after = [u for t, u in times[i] if t >= told]
                assert not any(isinstance(u, SnapshotApplied) for u in after), after
                gaps.append(worst_gap(times[i], told))
            stayed = [worst_gap(times[i], min(move_times)) for i in range(CLIENTS)
                      if i not in moved]
            levels = sum(1 for ups in fl.updates for u in ups if isinstance(u, Degraded))
            # The moves were spread over the drain, not sent in one burst.
            spread = max(move_times) - min(move_times)
            assert spread >= (DRAIN_S - CLOSE_IN_MS / 1000) * 0.5 * (on_w0 - 1) / on_w0
            print(f"\ndrain: {on_w0} of {CLIENTS} clients moved; moves spread over "
                  f"{spread:.2f} s (SIGTERM → first GoAway {min(move_times) - sigterm_at:.3f} s);"
                  f" worst gap between deltas of a moved client {max(gaps) * 1000:.0f} ms, "
                  f"median of the worst gaps {sorted(gaps)[len(gaps) // 2] * 1000:.0f} ms; "
                  f"clients that stayed: worst gap {max(stayed) * 1000:.0f} ms over the same "
                  f"time; level changes seen {levels}")

            # Every moved client resumed bridged on the surviving worker.
            bridged = await worker_samples(ports["w1"], "ws_resumes_total", outcome="bridged")
            assert bridged.get("1", 0.0) >= on_w0 * len(GROUPS)
        # A drained exit is not a failure: replaced, not restarted, no budget spent.
        restarts = await supervisor_samples(ports["sup"], "process_restarts_total")
        assert restarts == {"gateway.0": 0.0, "gateway.1": 0.0}
        replaced = await supervisor_samples(ports["sup"], "process_drained_replaced_total")
        assert replaced == {"gateway.0": 1.0, "gateway.1": 0.0}
        assert last_pid(tree, "gateway.0") != w0
        started = tree.coded("XY-GW-040")
        finished = tree.coded("XY-GW-041")
        assert len(started) == 1 and started[0]["clients"] == on_w0
        assert len(finished) == 1 and finished[0]["left"] == on_w0
        assert finished[0]["closed"] == 0


async def test_admin_drain_needs_the_admin_role_and_is_audited(
    tmp_path, nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots()
    async with gateway_workers(tmp_path, nats_server.url, keys, drain_s=1.0) as (tree, ports):
        w1 = await tree.started_pid("gateway.1")
        # No token, and a token without the role: refused, audited, the worker keeps serving.
        status, _ = await post(ports["w1"], "/admin/drain", None)
        assert status == 401
        status, body = await post(ports["w1"], "/admin/drain", keys.token("mallory"))
        assert status == 403 and "lacks role 'admin'" in body
        await tree.wait_for(lambda x: x.get("code") == "XY-GW-044"
                            and x.get("sub") == "mallory")
        refused = tree.coded("XY-GW-044")
        assert {x.get("outcome") for x in refused} == {"denied"}
        assert {x.get("action") for x in refused} == {"admin.drain"}
        status, _doc = await healthz(ports["w1"])
        assert status == 200
        counted = await worker_samples(ports["w1"], "gateway_drain_requests_total")
        assert counted == {"1": 2.0}

        # With the role: accepted, audited, the worker drains and is replaced.
        status, body = await post(ports["w1"], "/admin/drain", keys.token("ops", roles=["admin"]))
        assert status == 202 and json.loads(body)["draining"] is True
        line = await tree.wait_for(lambda x: x.get("code") == "XY-GW-043")
        assert line["sub"] == "ops" and line["outcome"] == "allowed"
        await tree.wait_for(lambda x: _is(x, "process drained; starting a fresh copy",
                                          "gateway.1"))
        await wait_healthy(ports["w1"], 60)
        assert last_pid(tree, "gateway.1") != w1
        started = tree.coded("XY-GW-040")
        assert started and started[0]["reason"] == "admin ops"
