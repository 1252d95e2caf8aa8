"""``xypipe run configs/cluster.toml`` end to end: a 3-node NATS cluster, the aggregators, the
gateway workers, browser-like clients checking every sequence, and faults.

``test_cluster_acceptance`` is issue 14's acceptance on the full config (2 aggregators that
split the groups, 2 gateway workers). ``test_a_tree_on_the_cluster_loses_nothing_when_a_node
_dies`` runs the same config with one aggregator and one gateway: the NATS cluster's own part
(every process given every node, following a node's loss, R3 streams) on its own.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
from _cluster_stack import ClusterStack, metric, running_cluster

pytestmark = pytest.mark.nats

#: Issue 14's bound on a fail-over as clients see it: the acceptance criterion itself.
FAILOVER_S = 2.0


async def lose_stream_leader(stack: ClusterStack, stream: str = "XY_SRC") -> None:
    """SIGKILL the node leading ``stream`` (the source stream: the harshest node to lose);
    every client gets fresh deltas of every group while it is away and after the tree
    restarted it, with no problem seen."""
    node = await stack.stream_leader(stream)
    old = stack.nats_pid(node)
    assert old is not None, f"no nats-server of node {node} in the tree"
    os.kill(old, signal.SIGKILL)
    await stack.all_fresh()
    await node_back(stack, node, old)
    await stack.all_fresh()
    assert not stack.problems(), stack.diagnostics()


async def node_back(stack: ClusterStack, node: int, old_pid: int | None) -> None:
    with trio.fail_after(30):
        # Another process's restart by the tree's supervisor: a state to poll.
        while stack.nats_pid(node) in (None, old_pid):  # noqa: ASYNC110
            await trio.sleep(0.1)


async def test_a_tree_on_the_cluster_loses_nothing_when_a_node_dies(tmp_path: Path):
    async with running_cluster(tmp_path, scale_out=False) as stack:
        # The node the aggregator is connected to: the aggregator must move to another.
        aggregator = stack.tree.child_pid("aggregator")
        assert aggregator is not None
        node = stack.connected_node(aggregator)
        assert node is not None, "the aggregator holds no connection to a cluster node"
        old = stack.nats_pid(node)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await stack.all_fresh()
        with trio.fail_after(30):
            # The aggregator's own count of its moves, read from its /metrics: polled.
            while not await metric(stack.ports.aggregator,  # noqa: ASYNC110
                                   "nats_server_changes_total"):
                await trio.sleep(0.2)
        moved_to = stack.connected_node(aggregator)
        assert moved_to is not None and moved_to != node
        await node_back(stack, node, old)
        assert not stack.problems(), stack.diagnostics()

        # Then the source stream's leader (a new election for the stream everything reads).
        await lose_stream_leader(stack)
        wrong = await stack.books_match_accepted()
        assert not wrong, "\n".join(wrong) + "\n" + stack.diagnostics()
        assert not stack.fences.interleaved


async def test_cluster_acceptance(tmp_path: Path):
    async with running_cluster(tmp_path, scale_out=True, clients=2) as stack:
        ports = stack.ports
        # Clients on both gateway workers: the kernel spreads connections on the shared
        # port; more clients until each worker has some.
        with trio.fail_after(60):
            while True:
                active = [await metric(ports.gateway_metrics + i, "ws_active") for i in (0, 1)]
                if all(a for a in active):
                    break
                assert len(stack.clients) < 16, f"connections on one worker only: {active}"
                client = stack.add_client(f"client-{len(stack.clients)}")
                with trio.fail_after(30):
                    await client.wait_synced()
        await stack.all_fresh()

        # Both aggregators own groups.
        owned = [await metric(ports.aggregator_metrics + i, "ownership_groups_owned")
                 for i in (0, 1)]
        assert all(owned), f"groups owned per aggregator: {owned}"

        # 1. kill -9 one aggregator: its groups continue from the other.
        victim = stack.worker_pid("aggregator", 0)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        took = await stack.all_fresh()
        print(f"after kill -9 of an aggregator, every group live again in {took:.2f} s")
        assert took <= FAILOVER_S, f"groups continued {took:.2f} s after the kill\n" \
            + stack.diagnostics()
        assert not stack.problems(), stack.diagnostics()

        # 2. The restarted aggregator takes its share back, never two publishers of a group.
        with trio.fail_after(60):
            while True:
                pid = stack.worker_pid("aggregator", 0)
                share = (await metric(ports.aggregator_metrics, "ownership_groups_owned")
                         if pid not in (None, victim) else None)
                if share:
                    break
                await trio.sleep(0.2)
        await stack.all_fresh()
        assert not stack.problems(), stack.diagnostics()

        # 3. kill -9 one NATS node: nothing lost.
        await lose_stream_leader(stack)

        wrong = await stack.books_match_accepted()
        assert not wrong, "\n".join(wrong) + "\n" + stack.diagnostics()
        assert not stack.fences.interleaved, stack.fences.interleaved[:10]
        assert not stack.fences.undecodable
        # Every group was fenced (published under a lease), and moved at least once.
        assert all(f[-1] > 0 for f in stack.fences.fences.values()), stack.fences.fences


async def test_losing_the_lease_buckets_leader_loses_nothing(tmp_path: Path):
    """The node leading the lease bucket dies: no lease can be renewed until a new leader is
    elected (seconds), so every group's lease expires and is acquired again — and the ticks
    the source stream accepted meanwhile must still reach every client."""
    async with running_cluster(tmp_path, scale_out=True, clients=2) as stack:
        await stack.all_fresh()
        await lose_stream_leader(stack, "KV_xy_agg_leases")
        wrong = await stack.books_match_accepted()
        assert not wrong, "\n".join(wrong) + "\n" + stack.diagnostics()
        assert not stack.fences.interleaved, stack.fences.interleaved[:10]
