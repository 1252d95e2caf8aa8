"""Supervision with real processes and a real nats-server: restarts in place, budgets, the
embedded server restarted on its port and data, and Ctrl-C stopping pipelines before NATS.

Trees run as ``xypipe run CONFIG`` would from a terminal, on free ports; what they did is read
from their JSON log lines (the parent's and, inherited, its children's).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_demo import free_port, http_get, nats_servers_for, wait_healthy

from xypipe import load_config
from xypipe._config import ProcessRestartPolicy
from xypipe._errors import ChildFailed, find_in_group
from xypipe._metrics import Metrics
from xypipe._nats import connect
from xypipe._nats_keys import seed_file_of
from xypipe._runner import Runner
from xypipe._supervise import (
    WORKER_CODES,
    Failed,
    Finished,
    Stopped,
    SupervisionMetrics,
    supervise,
)
from xypipe._supervisor import _Worker

ROOT = pathlib.Path(__file__).resolve().parent.parent

Line = dict[str, Any]


# --------------------------------------------------------------------------- a running tree


class Tree:
    """An ``xypipe run`` process in its own session, with its stderr read as JSON lines."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[Line] = []
        self.text: list[str] = []
        self._more = trio.Event()
        self.closed = False

    async def pump(self) -> None:
        assert self.proc.stderr is not None
        buf = b""
        async with self.proc.stderr:
            while chunk := await self.proc.stderr.receive_some(65536):
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    self.text.append(line)
                    if line.startswith("{"):
                        self.lines.append(json.loads(line))
                self._more.set()
                self._more = trio.Event()
        self.closed = True
        self._more.set()

    async def wait_for(self, match: Callable[[Line], bool], within: float = 60) -> Line:
        """The first line (old or new) that matches; a hang guard, not a timed assertion."""
        with trio.fail_after(within):
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                if self.closed:
                    raise AssertionError("the tree exited before the line appeared")
                await self._more.wait()

    def supervisor(self, msg: str, process: str | None = None) -> list[Line]:
        return [line for line in self.lines
                if line.get("logger") == "xypipe.supervisor" and line.get("msg") == msg
                and (process is None or line.get("process") == process)]

    def coded(self, code: str) -> list[Line]:
        return [line for line in self.lines if line.get("code") == code]

    async def started_pid(self, process: str) -> int:
        line = await self.wait_for(lambda x: _is(x, "process started", process))
        return int(line["pid"])


def _is(line: Line, msg: str, process: str) -> bool:
    return (line.get("logger") == "xypipe.supervisor" and line.get("msg") == msg
            and line.get("process") == process)


@asynccontextmanager
async def running_tree(config_path: pathlib.Path) -> AsyncIterator[Tree]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # Its own session, as a terminal's job: os.killpg(pid, ...) is the terminal's Ctrl-C.
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONUNBUFFERED": "1"},
    )
    tree = Tree(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.pump)
            yield tree
            with trio.fail_after(30):
                await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def tree_config(tmp_path: pathlib.Path, *, nats_port: int | None, children: dict[str, str],
                extra: str = "", main: bool = True) -> tuple[pathlib.Path, dict[str, int]]:
    """Two-stage pipelines (a counter into a list) in ``main`` and in each child process;
    ``children`` maps a process name to its ``restart`` value."""
    ports = {name: free_port() for name in ["main", *children]}
    processes = ["main", *children] if main else list(children)
    text = f"[http]\nport = {ports['main']}\n"
    if nats_port is not None:
        text += (f'[nats]\nurl = "embedded"\n[nats.embedded]\nport = {nats_port}\n'
                 f'data_dir = "{tmp_path / "nats"}"\nrestart = {{ backoff_ms = 10 }}\n')
    for name, restart in children.items():
        text += f"[processes.{name}]\nhttp = {{ port = {ports[name]} }}\nrestart = {restart}\n"
    for name in processes:
        text += (f'[pipelines.{name}]\nprocess = "{name}"\n'
                 f'[[pipelines.{name}.stages]]\nuse = "runner_stages:Endless"\ninterval_ms = 20\n'
                 f'[[pipelines.{name}.stages]]\nuse = "xypipe.testing:ListSink"\n')
    path = tmp_path / "tree.toml"
    path.write_text(text + extra)
    load_config(path)  # a broken test config fails here, with the config's own message
    return path, ports


async def parent_restarts(port: int) -> dict[str, float]:
    """process_restarts_total of the processes that restarted, from the parent's /metrics
    (every supervised process reads 0 from its start)."""
    _, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
    return {s.labels["process"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "process_restarts_total" and s.value}


def admin_seed(tmp_path: pathlib.Path) -> str:
    """The embedded server's superuser key (kept with the data in the test's data dir)."""
    return str(seed_file_of(tmp_path / "nats", "superuser"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- whole trees

pytestmark = pytest.mark.nats


async def test_a_killed_child_comes_back_in_place_while_the_other_keeps_serving(tmp_path):
    policy = "{ policy = \"on-failure\", max_restarts = 5, window_s = 60, backoff_ms = 50 }"
    path, ports = tree_config(tmp_path, nats_port=free_port(),
                              children={"left": policy, "right": policy})
    async with running_tree(path) as tree:
        for name in ("left", "right"):
            await wait_healthy(ports[name], 60)
        left, right = await tree.started_pid("left"), await tree.started_pid("right")

        right_answers: list[int] = []

        async def watch_right(done: trio.Event) -> None:
            while not done.is_set():
                status, _ = await trio.to_thread.run_sync(http_get, ports["right"], "/healthz")
                right_answers.append(status)
                with trio.move_on_after(0.05):
                    await done.wait()

        back = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_right, back)
            os.kill(left, signal.SIGKILL)
            restarted = await tree.wait_for(lambda x: _is(x, "process restarted", "left"))
            await wait_healthy(ports["left"], 60)
            back.set()

        assert restarted["pid"] != left and _alive(restarted["pid"]) and not _alive(left)
        died = [x for x in tree.coded("XY-SUP-004") if x.get("process") == "left"]
        assert len(died) == 1 and died[0]["status"] == -signal.SIGKILL
        assert died[0]["msg"] == "process was killed by SIGKILL; restarting"
        # Only the process that failed was touched: the other kept its pid and kept answering.
        assert tree.supervisor("process restarted", "right") == []
        assert _alive(right) and tree.supervisor("process stopped") == []
        assert right_answers and set(right_answers) == {200}
        assert await parent_restarts(ports["main"]) == {"left": 1.0}

        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0


async def test_without_main_pipelines_the_supervisor_serves_its_own_health_and_metrics(tmp_path):
    # The production shape: every pipeline in a child, the parent only supervises.
    path, ports = tree_config(tmp_path, nats_port=free_port(), main=False,
                              children={"left": "{ backoff_ms = 10 }"})
    async with running_tree(path) as tree:
        health = await wait_healthy(ports["main"], 60)
        assert health["processes"] == {"left": True, "nats": True}
        left = await tree.started_pid("left")
        os.kill(left, signal.SIGKILL)
        await tree.wait_for(lambda x: _is(x, "process restarted", "left"))
        await wait_healthy(ports["main"], 60)
        assert await parent_restarts(ports["main"]) == {"left": 1.0}
        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0


async def test_a_process_that_keeps_crashing_stops_the_tree_once_its_budget_is_spent(tmp_path):
    path, _ = tree_config(tmp_path, nats_port=None, children={
        "steady": '"on-failure"',
        "doomed": "{ max_restarts = 2, window_s = 60, backoff_ms = 10 }",
    }, extra="""
[pipelines.crash]
process = "doomed"
[[pipelines.crash.stages]]
use = "runner_stages:Endless"
interval_ms = 10
[[pipelines.crash.stages]]
use = "runner_stages:Boom"
after = 0
[[pipelines.crash.stages]]
use = "xypipe.testing:ListSink"
""")
    async with running_tree(path) as tree:
        pass  # it stops by itself
    assert tree.proc.returncode == 1
    assert ("xypipe: process 'doomed' exited with status 1; restart budget spent "
            "(2 of 2 restarts in 60 s) [XY-SUP-005]") in tree.text
    restarts = [x for x in tree.coded("XY-SUP-004") if x.get("process") == "doomed"]
    assert [x["restarts"] for x in restarts] == [1, 2]
    spent = [x for x in tree.coded("XY-SUP-005") if x["logger"] == "xypipe.supervisor"]
    assert len(spent) == 1 and spent[0]["process"] == "doomed"
    # The healthy process was not restarted; it was stopped politely and drained.
    assert tree.supervisor("process restarted", "steady") == []
    assert [x["status"] for x in tree.supervisor("process stopped", "steady")] == [0]


async def test_a_killed_embedded_nats_server_comes_back_on_its_port_with_its_streams(tmp_path):
    nats_port = free_port()
    path, ports = tree_config(tmp_path, nats_port=nats_port,
                              children={"left": '"on-failure"', "right": '"on-failure"'})
    url = f"nats://127.0.0.1:{nats_port}"
    async with running_tree(path) as tree:
        for name in ("left", "right"):
            await wait_healthy(ports[name], 60)
        nats_pid = await tree.started_pid("nats")
        # The server admits its role users only; a test signs in as the admin role.
        async with connect(url, name="supervisor-test", nkeys_seed=admin_seed(tmp_path)) as nc:
            js = nc.jetstream()
            await js.ensure_stream("KEEP", ["keep.>"])
            await js.publish("keep.a", b"kept")

            os.kill(nats_pid, signal.SIGKILL)
            restarted = await tree.wait_for(lambda x: _is(x, "process restarted", "nats"))
            assert restarted["pid"] != nats_pid and not _alive(nats_pid)
            assert nats_servers_for(tmp_path / "nats") == [restarted["pid"]]

            # Our own connection reconnected to the same URL and finds the stream and its data.
            with trio.fail_after(30):
                # nats-py reconnects on its own schedule, with nothing to await from here.
                while (got := await _try_direct_get(js)) is None:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            assert got == b"kept"
        # The children's NATS connections came back by themselves.
        await tree.wait_for(lambda x: x.get("msg") == "nats reconnected")
        for name in ("left", "right"):
            health = await wait_healthy(ports[name], 60)
            assert health["nats"]["connected"]
        died = tree.coded("XY-EMB-002")
        assert len(died) == 1 and died[0]["status"] == -signal.SIGKILL
        assert await parent_restarts(ports["main"]) == {"nats": 1.0}
        assert tree.supervisor("process restarted", "left") == []

        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0
    assert nats_servers_for(tmp_path / "nats") == []


async def _try_direct_get(js: Any) -> bytes | None:
    from xypipe._errors import BridgeError

    try:
        msg = await js.direct_get_last("KEEP", "keep.a")
    except BridgeError:
        return None  # still reconnecting
    return msg.data if msg is not None else None


async def test_ctrl_c_to_the_whole_process_group_stops_pipelines_first_and_nats_last(tmp_path):
    path, ports = tree_config(tmp_path, nats_port=free_port(),
                              children={"left": '"on-failure"', "right": '"on-failure"'})
    async with running_tree(path) as tree:
        for name in ("left", "right"):
            await wait_healthy(ports[name], 60)
        pids = {name: await tree.started_pid(name) for name in ("left", "right", "nats")}
        # What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0

    stopped = [(x["process"], x["status"]) for x in tree.supervisor("process stopped")]
    # Both children stopped cleanly on their SIGINT (the tree stops: no drain), then NATS
    # was stopped.
    assert sorted(stopped[:2]) == [("left", 0), ("right", 0)]
    assert stopped[2:] == [("nats", 0)]
    # NATS never died under the children: no restart, no lost connection before they exited.
    assert tree.coded("XY-EMB-002") == []
    assert [x for x in tree.lines if x.get("msg") == "nats disconnected"] == []
    drained = [x for x in tree.lines if x.get("msg") == "pipeline stopped"]
    assert {x["pipeline"] for x in drained} == {"main", "left", "right"}
    assert all(x["drained"] for x in drained)
    # Everything is gone.
    assert not any(_alive(pid) for pid in pids.values())
    assert nats_servers_for(tmp_path / "nats") == []
    for port in ports.values():
        assert (await trio.to_thread.run_sync(http_get, port, "/healthz"))[0] == 0


# --------------------------------------------------------------------------- one process


async def test_single_process_mode_restarts_its_embedded_nats_server_too(tmp_path):
    path = tmp_path / "solo.toml"
    path.write_text(f"""
[nats]
url = "embedded"
[nats.embedded]
port = 0
data_dir = "{tmp_path / 'nats'}"
restart = {{ backoff_ms = 10 }}
[http]
enabled = false
[pipelines.p]
[[pipelines.p.stages]]
use = "runner_stages:Endless"
[[pipelines.p.stages]]
use = "xypipe.testing:ListSink"
""")
    runner = Runner(load_config(path))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        server = runner.embedded
        first_pid, port = server.pid, server.port
        async with connect(server.url, nkeys_seed=admin_seed(tmp_path)) as nc:
            await nc.jetstream().ensure_stream("SOLO", ["solo.>"])
            await nc.jetstream().publish("solo.a", b"kept")
        os.kill(first_pid, signal.SIGKILL)
        with trio.fail_after(30):
            # Another process's restart and a client's reconnect: states to poll, not events.
            while not (server.running and server.pid != first_pid  # noqa: ASYNC110
                       and runner.nats.is_connected):
                await trio.sleep(0.05)
        assert server.port == port
        # Same keys, same users after the restart.
        async with connect(server.url, nkeys_seed=admin_seed(tmp_path)) as nc:
            got = await nc.jetstream().direct_get_last("SOLO", "solo.a")
        assert got is not None and got.data == b"kept"
        restarts = runner.metrics.registry.get_sample_value(
            "process_restarts_total", {"process": "nats"})
        assert restarts == 1.0
        runner.stop()
    assert not server.running


async def test_a_single_process_whose_nats_server_is_down_for_good_stops_with_its_error(tmp_path):
    path = tmp_path / "solo.toml"
    path.write_text(f"""
[nats]
url = "embedded"
[nats.embedded]
port = 0
data_dir = "{tmp_path / 'nats'}"
restart = "never"
[http]
enabled = false
[pipelines.p]
[[pipelines.p.stages]]
use = "runner_stages:Endless"
[[pipelines.p.stages]]
use = "xypipe.testing:ListSink"
""")
    runner = Runner(load_config(path))
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:  # the runner's own error, out of our nursery
            await nursery.start(runner.run)
            os.kill(runner.embedded.pid, signal.SIGKILL)
    error = find_in_group(info.value, ChildFailed)
    assert error is not None and error.code == "XY-EMB-005"
    assert str(error) == "process 'nats' was killed by SIGKILL; restart policy \"never\""
    assert all(p.state == "stopped" for p in runner.pipelines)


# --------------------------------------------------------------------------- the loop itself


def _exiting(code: int) -> _Worker:
    return _Worker("w", [sys.executable, "-c", f"raise SystemExit({code})"])


async def _supervise(unit: _Worker, stopping: trio.Event | None = None, **policy: Any) -> Any:
    metrics = Metrics()
    outcome = await supervise(
        "w", unit, ProcessRestartPolicy(**policy), stopping=stopping or trio.Event(),
        metrics=SupervisionMetrics(metrics), codes=WORKER_CODES,
    )
    return outcome, metrics.registry.get_sample_value("process_restarts_total", {"process": "w"})


async def test_a_failing_process_is_restarted_until_its_budget_is_spent():
    with trio.fail_after(30):
        outcome, restarts = await _supervise(_exiting(3), max_restarts=2, backoff_ms=0)
    assert isinstance(outcome, Failed) and restarts == 2
    assert outcome.error.code == "XY-SUP-005" and isinstance(outcome.error, ChildFailed)
    assert str(outcome.error) == (
        "process 'w' exited with status 3; restart budget spent (2 of 2 restarts in 60 s)")


async def test_a_clean_exit_is_final_under_on_failure_and_restarted_under_always():
    with trio.fail_after(30):
        outcome, restarts = await _supervise(_exiting(0))
    assert outcome == Finished(0) and restarts == 0
    with trio.fail_after(30):
        outcome, restarts = await _supervise(_exiting(0), policy="always", max_restarts=1,
                                             backoff_ms=0)
    assert isinstance(outcome, Failed) and restarts == 1


async def test_policy_never_fails_at_the_first_exit_with_the_old_code():
    with trio.fail_after(30):
        outcome, restarts = await _supervise(_exiting(1), policy="never")
    assert isinstance(outcome, Failed) and restarts == 0
    assert outcome.error.code == "XY-SUP-001"
    assert str(outcome.error) == "process 'w' exited with status 1; restart policy \"never\""


async def test_a_restart_that_cannot_start_counts_against_the_budget(tmp_path):
    script = tmp_path / "once.sh"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    unit = _Worker("w", [str(script)])
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        outcomes: list[Any] = []

        async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            outcomes.append(await supervise(
                "w", unit, ProcessRestartPolicy(max_restarts=2, backoff_ms=0),
                stopping=trio.Event(), metrics=SupervisionMetrics(metrics), codes=WORKER_CODES,
                task_status=task_status))

        await nursery.start(run)
        script.unlink()  # exec'd already; every restart now fails to start
    [outcome] = outcomes
    assert isinstance(outcome, Failed) and outcome.error.code == "XY-SUP-005"
    assert str(outcome.error) == (
        "process 'w' could not be started; restart budget spent (2 of 2 restarts in 60 s)")


async def test_the_first_start_is_the_callers_and_its_error_is_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        await _supervise(_Worker("w", [str(tmp_path / "missing")]))


async def test_stopping_ends_a_backoff_at_once_and_a_stopped_process_is_not_restarted():
    stopping = trio.Event()
    metrics = Metrics()
    outcomes: list[Any] = []

    async def run() -> None:
        outcomes.append(await supervise(
            "w", _exiting(1), ProcessRestartPolicy(backoff_ms=600_000, max_backoff_ms=600_000),
            stopping=stopping, metrics=SupervisionMetrics(metrics), codes=WORKER_CODES))

    def restarts() -> float | None:
        return metrics.registry.get_sample_value("process_restarts_total", {"process": "w"})

    with trio.fail_after(30):  # a backoff of 10 minutes must not be waited out
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            # The child's exit happens in another process: poll until the loop has counted it.
            while restarts() != 1.0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            stopping.set()
    assert outcomes == [Stopped()]


async def test_a_cancelled_loop_kills_its_process():
    unit = _Worker("w", [sys.executable, "-c", "import time; time.sleep(60)"])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(_supervise_started, unit)
            scope.cancel()
    assert unit.returncode == -signal.SIGKILL


async def _supervise_started(
    unit: _Worker, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    await supervise("w", unit, ProcessRestartPolicy(), stopping=trio.Event(),
                    metrics=SupervisionMetrics(Metrics()), codes=WORKER_CODES,
                    task_status=task_status)


async def test_a_second_ctrl_c_kills_what_is_still_draining_at_once(tmp_path):
    path, ports = tree_config(tmp_path, nats_port=None, children={"stuck": '"on-failure"'},
                              extra="""
[pipelines.slow]
process = "stuck"
shutdown_grace_ms = 600000
[[pipelines.slow.stages]]
use = "runner_stages:Endless"
[[pipelines.slow.stages]]
use = "runner_stages:SlowSink"
per_item_ms = 60000
""")
    async with running_tree(path) as tree:
        await wait_healthy(ports["stuck"], 60)
        stuck = await tree.started_pid("stuck")
        os.killpg(tree.proc.pid, signal.SIGINT)
        # The child got its SIGINT and stops; its slow sink would hold it for minutes.
        await tree.wait_for(lambda x: x.get("msg") == "pipeline stopping"
                            and x.get("pipeline") == "slow")
        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.coded("XY-SUP-002"), "the second signal is acknowledged"
    # Killed by the second signal, not by the end of its grace period.
    assert tree.coded("XY-SUP-003") == []
    [killed] = tree.supervisor("process killed (stopping now)", "stuck")
    assert killed["status"] == -signal.SIGKILL and not _alive(stuck)
