"""Rolling restarts without processes: the sans-I/O machine fed times, the gate fed metrics
text, and the Trio shell driven over a fake fleet under Trio's mock clock."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs
import pytest
import trio

from xypipe._cli_rollout import request_rollout
from xypipe._config import ConfigError, parse_config
from xypipe._errors import RolloutError
from xypipe._rollout import (
    Finish,
    Phase,
    Rollout,
    RolloutConfig,
    StartNew,
    StopNew,
    StopOld,
)
from xypipe._rollout_gate import Reading, judge, reading_of
from xypipe._rollout_shell import Copy, RunFile, drive_rollout, run_file_for
from xypipe._supervisor import side_by_side

CFG = RolloutConfig(gate_s=10.0, ready_timeout_s=5.0)

# --------------------------------------------------------------------------- the machine


def test_each_copy_is_started_gated_then_its_old_one_stopped_in_turn():
    r = Rollout(["gateway.0", "gateway.1"], CFG)
    assert r.start(0.0) == [StartNew("gateway.0")]
    assert r.new_started(0.1) == []
    assert r.tick(1.0) == []
    assert r.new_ready(2.0) == []
    assert r.phase is Phase.GATING
    assert r.tick(11.9) == []  # the window is 10 s from readiness
    assert r.tick(12.0) == [StopOld("gateway.0")]
    assert r.old_stopped(13.0) == [StartNew("gateway.1")]
    r.new_started(13.0)
    r.new_ready(14.0)
    assert r.tick(24.0) == [StopOld("gateway.1")]
    [finish] = r.old_stopped(25.0)
    assert isinstance(finish, Finish)
    assert finish.outcome.ok and finish.outcome.replaced == ("gateway.0", "gateway.1")
    assert r.phase is Phase.DONE


def test_a_canary_is_a_longer_first_window():
    r = Rollout(["a", "b"], attrs.evolve(CFG, canary_s=60.0))
    r.start(0.0)
    r.new_started(0.0)
    r.new_ready(1.0)
    assert r.tick(60.9) == []
    assert r.tick(61.0) == [StopOld("a")]
    r.old_stopped(61.0)
    r.new_started(61.0)
    r.new_ready(62.0)
    assert r.tick(72.0) == [StopOld("b")]  # the next steps use gate_s


def test_a_new_copy_never_ready_is_stopped_and_the_rest_is_left_alone():
    r = Rollout(["a", "b"], CFG)
    r.start(0.0)
    r.new_started(0.0)
    assert r.tick(4.9) == []
    assert r.tick(5.0) == [StopNew("a")]
    [finish] = r.new_stopped(6.0)
    assert isinstance(finish, Finish)
    assert not finish.outcome.ok
    assert finish.outcome.failed_unit == "a"
    assert "not ready within 5 s" in finish.outcome.reason
    assert "still serving the old a, b" in finish.outcome.reason
    assert r.phase is Phase.ROLLED_BACK


@pytest.mark.parametrize("fail", ["exited", "gate", "unready", "start"])
def test_every_failure_rolls_back_only_the_new_copy_of_that_step(fail):
    r = Rollout(["a", "b"], CFG)
    r.start(0.0)
    r.new_started(0.0)
    r.new_ready(1.0)
    r.tick(11.0)
    r.old_stopped(11.0)  # a is replaced
    if fail == "start":
        actions = r.new_start_failed(11.5, "no such file")
    else:
        r.new_started(11.5)
        r.new_ready(12.0)
        actions = {"exited": lambda: r.new_exited(13.0, "exited with status 2"),
                   "gate": lambda: r.gate_failed(13.0, "3 errors"),
                   # Not-ready, and not ready again within ready_timeout_s.
                   "unready": lambda: (r.new_unready(13.0, "nats disconnected")
                                       or r.tick(18.0))}[fail]()
    assert actions == [StopNew("b")]
    assert r.tick(100.0) == []  # nothing else happens while it is being stopped
    [finish] = r.new_stopped(14.0)
    assert isinstance(finish, Finish)
    assert finish.outcome.replaced == ("a",)
    assert "already replaced: a" in finish.outcome.reason
    assert "still serving the old b" in finish.outcome.reason


def test_a_copy_not_ready_for_a_while_during_its_gate_gets_a_new_window_when_ready_again():
    # An aggregator on ownership leases takes over groups from the copy it replaces during its
    # window, and replays them: not ready for a moment, then ready again.
    r = Rollout(["a"], CFG)
    r.start(0.0)
    r.new_started(0.0)
    r.new_ready(1.0)
    assert r.new_unready(5.0, "stream XY_SRC: replaying") == []
    assert r.phase is Phase.WAITING_READY
    assert r.tick(9.9) == []  # within ready_timeout_s
    r.new_ready(6.0)
    assert r.phase is Phase.GATING
    assert r.tick(15.9) == []  # a whole new window from 6.0
    assert r.tick(16.0) == [StopOld("a")]


def test_a_copy_not_ready_again_in_time_or_too_often_is_rolled_back():
    late = Rollout(["a"], CFG)
    late.start(0.0)
    late.new_started(0.0)
    late.new_ready(1.0)
    late.new_unready(2.0, "stream XY_SRC: replaying, at 0 of 2149")
    assert late.tick(6.9) == []
    assert late.tick(7.0) == [StopNew("a")]
    [finish] = late.new_stopped(8.0)
    assert isinstance(finish, Finish)
    assert ("turned not-ready during its gate and was not ready again within 5 s: "
            "stream XY_SRC: replaying, at 0 of 2149") in finish.outcome.reason

    flapping = Rollout(["a"], attrs.evolve(CFG, max_unready=2))
    flapping.start(0.0)
    flapping.new_started(0.0)
    t = 1.0
    for _ in range(2):
        flapping.new_ready(t)
        assert flapping.new_unready(t + 1, "nats disconnected") == []
        t += 2
    flapping.new_ready(t)
    assert flapping.new_unready(t + 1, "nats disconnected") == [StopNew("a")]
    [finish] = flapping.new_stopped(t + 2)
    assert isinstance(finish, Finish)
    assert "turned not-ready during its gate 3 times: nats disconnected" in finish.outcome.reason


def test_events_out_of_turn_are_ignored():
    r = Rollout(["a"], CFG)
    assert r.new_ready(0.0) == []
    assert r.gate_failed(0.0, "x") == []
    r.start(0.0)
    assert r.old_stopped(0.0) == []
    assert r.gate_failed(0.0, "before the gate") == []  # not gating yet
    assert r.phase is Phase.STARTING


def test_a_rollout_needs_a_copy():
    with pytest.raises(ValueError, match="at least one"):
        Rollout([], CFG)


def test_rollout_is_a_config_table_with_checked_values():
    base = ('[pipelines.p]\n[[pipelines.p.stages]]\nuse = "xypipe.testing:CountingSource"\n'
            '[[pipelines.p.stages]]\nuse = "xypipe.testing:ListSink"\n')
    cfg = parse_config(_toml(base + "[rollout]\ngate_s = 3\ncanary_s = 60\n"), "x.toml")
    assert cfg.rollout.gate_s == 3 and cfg.rollout.window(0) == 60 and cfg.rollout.window(1) == 3
    with pytest.raises(ConfigError, match=r"rollout\.gate_s"):
        parse_config(_toml(base + "[rollout]\ngate_s = -1\n"), "x.toml")
    with pytest.raises(ConfigError, match="rollout"):
        parse_config(_toml(base + "[rollout]\ngate = 1\n"), "x.toml")


def _toml(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


# --------------------------------------------------------------------------- the gate

METRICS = """\
# TYPE stage_failures_total counter
stage_failures_total{{pipeline="p",stage="s",error="X"}} {failures}
# TYPE ws_closes_total counter
ws_closes_total{{code="1000"}} 50
ws_closes_total{{code="1011"}} {closes}
# TYPE e2e_latency_seconds histogram
e2e_latency_seconds_bucket{{point="gateway_send",le="0.01"}} {fast}
e2e_latency_seconds_bucket{{point="gateway_send",le="0.5"}} {slow}
e2e_latency_seconds_bucket{{point="gateway_send",le="+Inf"}} {slow}
e2e_latency_seconds_count{{point="gateway_send"}} {slow}
e2e_latency_seconds_sum{{point="gateway_send"}} 1
e2e_latency_seconds_bucket{{point="client_render",le="0.01"}} 0
e2e_latency_seconds_bucket{{point="client_render",le="+Inf"}} 1000
"""


def reading(failures: int = 0, closes: int = 0, fast: int = 100, slow: int = 100) -> Reading:
    return reading_of(METRICS.format(failures=failures, closes=closes, fast=fast, slow=slow))


def test_a_reading_counts_own_errors_abnormal_closes_and_the_delivery_histogram():
    r = reading(failures=3, closes=7, fast=90, slow=100)
    assert r.errors == 3
    assert r.disconnects == 7  # the 50 normal closes (1000) are not disconnects
    assert r.p99() == 0.5  # 90 % within 10 ms: the p99 is in the 0.5 s bucket
    assert reading(fast=100, slow=100).p99() == 0.01
    assert Reading().p99() is None


def test_a_reading_since_an_earlier_one_and_since_a_restart():
    start, end = reading(failures=1, fast=10, slow=10), reading(failures=4, fast=110, slow=110)
    window = end.since(start)
    assert window.errors == 3 and window.buckets[0.01] == 100
    assert start.since(end) == start  # counters went back: a restart, everything counts


def test_the_gate_judges_the_new_copy_against_the_old_ones():
    same = Reading(errors=0, disconnects=0, buckets={0.01: 100.0, float("inf"): 100.0})
    assert judge(same, [same, same], CFG) is None
    worse = attrs.evolve(same, errors=1)
    assert "1 errors in its window, allowed 0" in (judge(worse, [same], CFG) or "")
    # Old copies erring too (a bad market) raise the bar for the new one.
    assert judge(worse, [attrs.evolve(same, errors=1)], CFG) is None
    churn = attrs.evolve(same, disconnects=6)
    assert "6 client disconnects" in (judge(churn, [same], CFG) or "")
    slow = attrs.evolve(same, buckets={0.01: 0.0, 0.5: 100.0, float("inf"): 100.0})
    assert "delivery p99 500 ms, allowed 250 ms" in (judge(slow, [same], CFG) or "")
    assert judge(slow, [slow], CFG) is None  # as slow as the old ones: not the new code's fault
    lost = attrs.evolve(same, buckets={0.01: 0.0, float("inf"): 100.0})
    assert "above the largest bucket" in (judge(lost, [same], CFG) or "")


def test_text_that_is_not_metrics_is_refused():
    with pytest.raises(ValueError):
        reading_of("this is { not metrics")


# --------------------------------------------------------------------------- the shell


@attrs.define
class FakeFleet:
    """Copies as names; a successor's health and metrics are what the test sets."""

    current_names: dict[str, str] = attrs.field(factory=dict)
    events: list[str] = attrs.field(factory=list)
    fail_start: bool = False
    generation: int = 0
    copies: dict[str, Copy] = attrs.field(factory=dict)

    def current(self, unit: str) -> Copy:
        return self.copy(self.current_names.get(unit, unit))

    def copy(self, name: str) -> Copy:
        return self.copies.setdefault(name, Copy(name, None, trio.Event()))

    def peers(self, unit: str) -> list[Copy]:
        return [self.current(u) for u in sorted({unit, *self.current_names})]

    async def start_successor(self, unit: str) -> Copy:
        if self.fail_start:
            raise OSError("cannot start")
        self.generation += 1
        name = f"{unit}~g{self.generation}"
        self.events.append(f"start {name}")
        return self.copy(name)

    async def retire_old(self, unit: str) -> None:
        await trio.sleep(1.0)  # a drain takes time
        self.events.append(f"retire {self.current(unit).name}")
        self.current_names[unit] = f"{unit}~g{self.generation}"

    async def retire_new(self, unit: str) -> None:
        self.events.append(f"retire new {unit}~g{self.generation}")


@attrs.define
class FakeProbe:
    ready_after: float = 2.0
    #: Errors a successor has counted, by copy name (grows when the test says).
    errors: dict[str, float] = attrs.field(factory=dict)
    erring: str | None = None

    async def health(self, copy: Copy) -> tuple[bool, str]:
        return trio.current_time() >= self.ready_after, "starting"

    async def metrics(self, copy: Copy) -> Reading:
        if copy.name == self.erring:
            self.errors[copy.name] = self.errors.get(copy.name, 0.0) + 1
        return Reading(errors=self.errors.get(copy.name, 0.0))


async def test_the_shell_replaces_every_copy_in_turn(autojump_clock, tmp_path):
    fleet, probe = FakeFleet(), FakeProbe()
    run_file = RunFile(tmp_path / "run.json", "cfg.toml")
    number = run_file.begin()
    outcome = await drive_rollout(fleet, ["agg", "gw.0"], attrs.evolve(CFG, gate_s=3.0),
                                  trigger="test", run_file=run_file, probe=probe)
    assert outcome.ok, outcome.reason
    assert fleet.events == ["start agg~g1", "retire agg", "start gw.0~g2", "retire gw.0"]
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["rollout"] == number and doc["state"] == "done"
    assert "2 copies replaced" in doc["reason"]
    assert trio.current_time() >= 2 * 3.0  # each waited its gate


async def test_the_shell_rolls_back_a_copy_that_errs_during_its_gate(autojump_clock):
    fleet, probe = FakeFleet(), FakeProbe(erring="gw.0~g1")
    outcome = await drive_rollout(fleet, ["gw.0", "gw.1"], CFG, trigger="test", probe=probe)
    assert not outcome.ok
    assert "failed its health gate" in outcome.reason and "errors in its window" in outcome.reason
    assert fleet.events == ["start gw.0~g1", "retire new gw.0~g1"]
    assert trio.current_time() < CFG.gate_s + 2.0 + 1.0  # it did not wait the window out


async def test_the_shell_rolls_back_a_copy_that_exits_or_never_gets_ready(autojump_clock):
    fleet, probe = FakeFleet(), FakeProbe(ready_after=1e9)
    outcome = await drive_rollout(fleet, ["gw.0"], CFG, trigger="test", probe=probe)
    assert not outcome.ok and "not ready within 5 s" in outcome.reason
    fleet = FakeFleet()

    async def exit_soon() -> None:
        await trio.sleep(0.7)
        fleet.copy("gw.0~g1").exited.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(exit_soon)
        outcome = await drive_rollout(fleet, ["gw.0"], CFG, trigger="test",
                                      probe=FakeProbe(ready_after=1e9))
    assert not outcome.ok and "the new gw.0 exited" in outcome.reason


async def test_the_shell_reports_a_successor_that_cannot_start(autojump_clock):
    outcome = await drive_rollout(FakeFleet(fail_start=True), ["gw.0"], CFG, trigger="test",
                                  probe=FakeProbe())
    assert not outcome.ok and "could not be started: cannot start" in outcome.reason


# --------------------------------------------------------------------------- xypipe rollout


def test_xypipe_rollout_without_a_running_tree_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    config = str(tmp_path / "app.toml")
    with pytest.raises(RolloutError, match=r"no running `xypipe run .*app.toml` on this machine"):
        request_rollout(config)
    # A run file left by a tree that was killed: its pid runs something else (or nothing).
    stale = RunFile(run_file_for(config), config)
    stale.doc["pid"] = 2**22 + 12345  # above pid_max on this machine's default: nobody
    stale.write()
    assert oct(run_file_for(config).stat().st_mode & 0o777) == "0o600"
    with pytest.raises(RolloutError, match="is stale"):
        request_rollout(config)
    # A live process whose command line names xypipe, mid-rollout: not asked twice.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", "xypipe"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # it runs
        busy = RunFile(run_file_for(config), config)
        busy.doc.update(pid=proc.pid, state="running")
        busy.write()
        with pytest.raises(RolloutError, match="already running"):
            request_rollout(config)
        assert proc.poll() is None  # it was not signalled
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


# --------------------------------------------------------------------------- what is rolled


def _tree_config(ownership: bool) -> dict[str, object]:
    ingest: dict[str, object] = {"use": "ingest"}
    if ownership:
        ingest["ownership"] = {"enabled": True}
    return {
        "nats": {"url": "nats://127.0.0.1:4222"},
        "processes": {"aggregator": {"http": {"port": 18090}},
                      "gateway": {"http": {"port": 18080}, "workers": 1}},
        "pipelines": {
            "aggregator": {"process": "aggregator", "stages": [
                ingest, {"use": "dedupe"}, {"use": "shard"}, {"use": "conflate"},
                {"use": "snapshot"}, {"use": "publish"}]},
            "gateway": {"process": "gateway", "stages": [
                {"use": "nats_source", "name": "md", "subjects": ["xy.md.>"]},
                {"use": "gateway", "public_key": "k.pem", "allowed_origins": ["*"]}]},
        },
    }


def test_only_processes_that_may_run_twice_are_rolled():
    plain = parse_config(_tree_config(ownership=False), "x.toml")
    leased = parse_config(_tree_config(ownership=True), "x.toml")
    assert side_by_side(plain, "gateway") and side_by_side(leased, "gateway")
    assert not side_by_side(plain, "aggregator")  # two copies would publish twice
    assert side_by_side(leased, "aggregator")  # the leases split the groups between them
