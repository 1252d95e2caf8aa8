"""Tapes against a real nats-server: record what is published, replay a tape at a speed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from xypipe._nats import NatsClient, connect
from xypipe._publisher import MarketTapeSpec, write_market_tape
from xypipe._tape import Tape, TapeRecord, read_tape, record_tape, replay_tape
from xypipe.contracts import Tick

pytestmark = pytest.mark.nats
ROOT = Path(__file__).resolve().parents[2]
SUBJECTS = ["xy.src.tick.>", "xy.ref.contract.>"]


def _messages(n: int) -> list[tuple[str, bytes]]:
    """A contract, then ``n - 1`` ticks over three symbols."""
    out = [("xy.ref.contract.XNAS.S1", b"contract-of-S1")]
    for i in range(n - 1):
        sym = f"S{i % 3}"
        out.append((f"xy.src.tick.XNAS.{sym}",
                    Tick(venue="XNAS", symbol=sym, seq=i // 3 + 1, last=100 + i).
                    SerializeToString()))
    return out


def _per_subject(pairs: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for subject, data in pairs:
        out.setdefault(subject, []).append(data)
    return out


async def test_record_keeps_every_message_with_its_time(nats_client: NatsClient,
                                                        nats_url: str, tmp_path: Path) -> None:
    sent = _messages(300)
    path = tmp_path / "rec.tape"
    async with connect(nats_url, name="publisher") as pub, trio.open_nursery() as nursery:
        headers = []

        async def rec(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            headers.append(await record_tape(nats_client, SUBJECTS, path, count=len(sent),
                                             source="test", task_status=task_status))

        await nursery.start(rec)
        for i, (subject, data) in enumerate(sent):
            await pub.publish(subject, data)
            if i == 150:
                await trio.sleep(0.05)  # a pause the tape's times must show
        await pub.flush()
    tape = read_tape(path)
    assert headers[0].records == len(tape) == len(sent) and tape.closed
    assert tape.header.subjects == tuple(SUBJECTS) and tape.header.seed is None
    assert abs(tape.header.created_us - time.time_ns() // 1000) < 60_000_000
    got = [(r.subject, r.data) for r in tape]
    assert _per_subject(got) == _per_subject(sent)
    times = [r.t_us for r in tape]
    assert times == sorted(times) and times[-1] - times[0] >= 50_000


async def test_xypipe_record_stops_after_count(nats_url: str, tmp_path: Path) -> None:
    sent = _messages(120)
    path = tmp_path / "cli.tape"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "record", *SUBJECTS, "--to", str(path), "--count",
         str(len(sent)), "--url", nats_url], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        seen = b""
        with trio.fail_after(60):
            while b"recording " not in seen:
                chunk = await proc.stderr.receive_some()
                assert chunk, seen.decode()
                seen += chunk
        async with connect(nats_url, name="publisher") as pub:
            for subject, data in sent:
                await pub.publish(subject, data)
            await pub.flush()
        out = b""
        with trio.fail_after(60):
            while chunk := await proc.stdout.receive_some():
                out += chunk
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert json.loads(out)["records"] == len(sent)
    assert _per_subject([(r.subject, r.data) for r in read_tape(path)]) == _per_subject(sent)


async def _replay_and_collect(nc: NatsClient, url: str, tape: Tape, speed: float | None,
                              ) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    done = trio.Event()

    async def collect(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with nc.subscribe("xy.>", max_batch=1024) as sub:
            task_status.started()
            async for batch in sub:
                got.extend((m.subject, bytes(m.data)) for m in batch)
                if len(got) >= len(tape):
                    done.set()
                    return

    async with trio.open_nursery() as nursery:
        await nursery.start(collect)
        await nc.flush()
        async with connect(url, name="replayer") as pub:
            assert await replay_tape(pub, tape, speed) == len(tape)
        with trio.fail_after(60):
            await done.wait()
    return got


@pytest.mark.parametrize("speed", [None, 10.0], ids=["max", "10x"])
async def test_replay_sends_every_record_in_order(nats_client: NatsClient, nats_url: str,
                                                  tmp_path: Path, speed: float | None) -> None:
    path = tmp_path / "m.tape"
    write_market_tape(path, MarketTapeSpec(seed=5, rate=3000, duration_s=0.5, symbols=30))
    tape = read_tape(path)
    before = time.time_ns() // 1000
    got = await _replay_and_collect(nats_client, nats_url, tape, speed)
    after = time.time_ns() // 1000
    assert len(got) == len(tape)
    want = _per_subject([(r.subject, r.data) for r in tape])
    have = _per_subject(got)
    assert set(have) == set(want)
    for subject, payloads in want.items():
        if not subject.startswith("xy.src.tick."):
            assert have[subject] == payloads  # reference data goes out as recorded
            continue
        # Ticks are re-timed to the replay's clock (appended fields override), nothing else.
        sent = [Tick.FromString(p) for p in have[subject]]
        orig = [Tick.FromString(p) for p in payloads]
        assert [t.seq for t in sent] == [t.seq for t in orig]
        for s, o in zip(sent, orig, strict=True):
            assert before - 1_000_000 <= s.ts_exchange_us <= after
            assert before <= s.ts_arrival_us <= after
            assert s.ts_arrival_us - s.ts_exchange_us == o.ts_arrival_us - o.ts_exchange_us
            s.ts_exchange_us, s.ts_arrival_us = o.ts_exchange_us, o.ts_arrival_us
            assert s == o


async def test_replay_without_retime_sends_the_bytes_as_recorded(nats_client: NatsClient,
                                                                 tmp_path: Path) -> None:
    recs = [TapeRecord(i * 100, f"xy.src.tick.X.S{i % 2}", b"not-even-a-tick-%d" % i)
            for i in range(50)]
    tape = Tape(read_tape(_write(tmp_path, recs)).header, tuple(recs))
    got: list[tuple[str, bytes]] = []
    async with nats_client.subscribe("xy.>", max_batch=1024) as sub:
        await nats_client.flush()
        assert await replay_tape(nats_client, tape, None, retime=False) == 50
        with trio.fail_after(30):
            async for batch in sub:
                got.extend((m.subject, bytes(m.data)) for m in batch)
                if len(got) >= 50:
                    break
    assert got == [(r.subject, r.data) for r in recs]


def _write(tmp_path: Path, recs: list[TapeRecord]) -> Path:
    from xypipe._tape import TapeHeader, write_tape

    path = tmp_path / "raw.tape"
    write_tape(path, TapeHeader(), recs)
    return path


async def test_xypipe_publish_tape_at_max_speed(nats_client: NatsClient, nats_url: str,
                                                tmp_path: Path) -> None:
    path = tmp_path / "m.tape"
    write_market_tape(path, MarketTapeSpec(seed=2, rate=2000, duration_s=0.5, symbols=20))
    n = len(read_tape(path))
    got = 0
    async with nats_client.subscribe("xy.>", max_batch=1024) as sub:
        await nats_client.flush()
        proc = await trio.run_process(
            [sys.executable, "-m", "xypipe", "publish", "--tape", str(path), "--speed", "max",
             "--url", nats_url], cwd=tmp_path, capture_stdout=True, capture_stderr=True,
            check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout)["published"] == n
        with trio.fail_after(30):
            async for batch in sub:
                got += len(batch)
                if got >= n:
                    break
    assert got == n


async def test_xypipe_record_closes_the_tape_on_ctrl_c(nats_url: str, tmp_path: Path) -> None:
    sent = _messages(40)
    path = tmp_path / "open.tape"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "record", *SUBJECTS, "--to", str(path), "--url",
         nats_url], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        seen = b""
        with trio.fail_after(60):
            while b"recording " not in seen:
                chunk = await proc.stderr.receive_some()
                assert chunk, seen.decode()
                seen += chunk
        async with connect(nats_url, name="publisher") as pub:
            for subject, data in sent:
                await pub.publish(subject, data)
            await pub.flush()
        # Written record by record (buffered): wait until the last one reached the file.
        with trio.fail_after(30):
            while sent[-1][1] not in path.read_bytes():  # noqa: ASYNC110 (another process)
                await trio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out = b""
        with trio.fail_after(60):
            while chunk := await proc.stdout.receive_some():
                out += chunk
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert json.loads(out)["records"] == len(sent)
    tape = read_tape(path)
    assert tape.closed and tape.header.records == len(sent)
