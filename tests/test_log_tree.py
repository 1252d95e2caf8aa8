"""A restarted publisher used to flood the aggregator's log with dozens of identical
source-restart warnings (one per batch while its symbols came back at sequence 1). In a real
process tree — embedded NATS, the aggregator and the publisher in processes of their own —
kill the publisher (twice, so that more warnings come than the limit lets through, however the
machine batches them) and see the limit's warnings and one summary that counts the rest.

The window is 30 s (10 by default): both restarts must fall in the first one, and on a busy
machine a publisher restart (a Python process starting, its symbols coming back) can take
longer than 10 s — the second would open a window of its own, nothing folded, no summary."""

from __future__ import annotations

import os
import pathlib
import signal

import pytest
from test_demo import free_port, wait_healthy, wait_metrics
from test_supervisor import Line, running_tree

pytestmark = pytest.mark.nats

SOURCE_RESTART = "XY-SRC-002"


def tree_with_a_publisher(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, int]]:
    ports = {name: free_port() for name in ("main", "aggregator", "publisher")}
    path = tmp_path / "restart.toml"
    path.write_text(f"""
[log]
level = "info"
format = "json"
repeat_limit = 1
repeat_window_s = 30

[nats]
url = "embedded"
[nats.embedded]
port = {free_port()}
data_dir = "{tmp_path / "nats"}"

[http]
port = {ports["main"]}

[processes.aggregator]
http = {{ port = {ports["aggregator"]} }}
[processes.publisher]
http = {{ port = {ports["publisher"]} }}
restart = {{ policy = "on-failure", backoff_ms = 50 }}

[pipelines.aggregator]
process = "aggregator"
[[pipelines.aggregator.stages]]
use = "ingest"
[[pipelines.aggregator.stages]]
use = "dedupe"
[[pipelines.aggregator.stages]]
use = "shard"
[[pipelines.aggregator.stages]]
use = "conflate"
[[pipelines.aggregator.stages]]
use = "snapshot"
[[pipelines.aggregator.stages]]
use = "publish"

[pipelines.publisher]
process = "publisher"
[[pipelines.publisher.stages]]
use = "publisher"
symbols = 500
# Slow enough that the restarted symbols come back one batch after another, even on a busy
# machine (a fast market folds them into few, large batches).
rate = 1000.0
seed = 1
""")
    return path, ports


def _started(line: Line) -> bool:
    return (line.get("logger") == "xypipe.supervisor"
            and line.get("msg") in ("process started", "process restarted")
            and line.get("process") == "publisher")


def _source_restarts(lines: list[Line]) -> list[Line]:
    return [x for x in lines if x.get("code") == SOURCE_RESTART]


async def test_a_publisher_restart_logs_a_few_source_restarts_and_one_counted_summary(tmp_path):
    path, ports = tree_with_a_publisher(tmp_path)
    async with running_tree(path) as tree:
        await wait_healthy(ports["aggregator"], 60)
        # The aggregator has seen the first session: killed before any tick of it arrived, the
        # restarted publisher's sequences would be a first session, not a restart.
        await wait_metrics(ports["aggregator"], ("src_ingest_total",), 60)
        first = await tree.started_pid("publisher")
        os.kill(first, signal.SIGKILL)  # restarted at once: every symbol starts over at 1
        await tree.wait_for(lambda x: x.get("code") == SOURCE_RESTART)
        second = await tree.wait_for(
            lambda x: _started(x) and int(x["pid"]) != first)
        os.kill(int(second["pid"]), signal.SIGKILL)  # and again: a second restart, same window
        summary = await tree.wait_for(
            lambda x: x.get("code") == SOURCE_RESTART and "repeated" in x, within=90)
        before = _source_restarts(tree.lines)
        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0

    # The first window: the one warning the limit lets through, then one line counting the rest.
    assert "repeated" not in before[0]
    assert before[1] is summary and len(before) == 2
    folded = summary["repeated"]
    assert folded >= 1 and summary["window_s"] == 30
    assert summary["msg"] == ("source sequences restarted at 1; following the new session "
                              f"(repeated {folded} more times in 30 s)")
    assert summary["level"] == "warning"
    # Whatever came after is folded the same way (and what was open is counted at the stop).
    after = _source_restarts(tree.lines)[2:]
    plain = [x for x in after if "repeated" not in x]
    windows = [x for x in after if "repeated" in x]
    assert len(plain) <= len(windows) + 1
