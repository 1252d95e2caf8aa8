"""Logs for machines and for people: JSON by default off a terminal, rich's console lines on
one, the same redaction in both, and repeated warnings folded into a counted summary."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import trio
from _terminal import run_on_a_terminal, shown

from xypipe._config import parse_config
from xypipe._errors import LOG_BAD_FORMAT, XyError
from xypipe._log import (
    ENV_FORMAT,
    XyHandler,
    configure,
    flush_repeats,
    get_logger,
    resolve_format,
    summarise_repeats,
)
from xypipe._log_repeats import RepeatFolder, RepeatKey, RepeatPolicy, Summary

JWT = ("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmU")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging(monkeypatch):
    monkeypatch.delenv(ENV_FORMAT, raising=False)
    yield
    configure("info")


def json_lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


# --------------------------------------------------------------------------- choosing a format


def test_auto_is_console_on_a_terminal_and_json_elsewhere(monkeypatch):
    monkeypatch.delenv(ENV_FORMAT, raising=False)
    assert resolve_format("auto", Tty()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


def test_the_environment_overrides_the_config_and_a_typo_is_named(monkeypatch):
    monkeypatch.setenv(ENV_FORMAT, "console")
    assert resolve_format("json", io.StringIO()) == "console"
    monkeypatch.setenv(ENV_FORMAT, "jsn")
    with pytest.raises(XyError, match=r"\$XY_LOG_FORMAT: expected one of 'auto', 'json', "
                                      r"'console', got 'jsn'; did you mean 'json'\?") as info:
        resolve_format("auto", io.StringIO())
    assert info.value.code == LOG_BAD_FORMAT


def test_log_table_keys_are_validated_with_a_did_you_mean():
    cfg = parse_config({"log": {"format": "console", "repeat_limit": 3, "repeat_window_s": 2},
                        "pipelines": {"p": {"stages": [
                            {"use": "xypipe.testing:CountingSource"},
                            {"use": "xypipe.testing:ListSink"}]}}}, "t.toml")
    assert cfg.log.format == "console"
    assert cfg.log.repeats == RepeatPolicy(limit=3, window_s=2.0)
    for table, problem in [
        ({"format": "consol"}, 't.toml: log.format: expected one of "auto", "json", "console", '
                               'got "consol"; did you mean "console"?'),
        ({"fromat": "json"}, "t.toml: log.fromat: unknown key; did you mean 'format'?"),
        ({"repeat_window_s": -1}, "t.toml: log.repeat_window_s: expected a number 0..86400, "
                                  "got -1.0"),
        ({"repeat_limit": 0}, "t.toml: log.repeat_limit: expected an integer 1..1000000, got 0"),
    ]:
        with pytest.raises(XyError) as info:
            parse_config({"log": table, "pipelines": {"p": {"stages": [
                {"use": "xypipe.testing:CountingSource"},
                {"use": "xypipe.testing:ListSink"}]}}}, "t.toml")
        assert problem in str(info.value).splitlines()


# --------------------------------------------------------------------------- console lines


def test_console_lines_are_readable_and_carry_code_and_fields(restore_logging, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps a message at the terminal's width
    buf = io.StringIO()
    configure("info", stream=buf, format="console")
    get_logger("supervisor").warning("process was killed by SIGKILL; restarting",
                                     code="XY-SUP-004", process="left", restarts=1)
    get_logger("cli").info("listening", port=8080)
    text = buf.getvalue()
    assert not text.lstrip().startswith("{")
    warning, info = [" ".join(line.split()) for line in text.splitlines()]
    assert warning.split(" ", 1)[1] == (
        "WARNING supervisor: process was killed by SIGKILL; restarting [XY-SUP-004] "
        "process=left restarts=1")
    assert info.endswith("INFO cli: listening port=8080")
    assert "\x1b[" not in text  # no colour codes: a StringIO is not a terminal


def test_console_lines_are_coloured_on_a_terminal(restore_logging, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    buf = Tty()
    configure("info", stream=buf)  # auto, and the stream is a terminal
    get_logger("t").error("boom", code="XY-GEN-000")
    assert "\x1b[" in buf.getvalue() and "boom" in buf.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_redacted_in_both_renderers(restore_logging, monkeypatch, fmt):
    monkeypatch.setenv("COLUMNS", "300")
    buf = io.StringIO()
    configure("info", stream=buf, format=fmt)
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError as exc:
        get_logger("t").error(f"refresh refused for {JWT}", code="XY-AUTH-001", exc=exc,
                              token_subject="alice", password="hunter2-but-longer",
                              header=f"Bearer {JWT}")
    text = buf.getvalue()
    assert JWT not in text and "hunter2" not in text
    assert "[redacted:jwt #" in text and "alice" in text
    assert "Traceback" not in text  # an exception is one redacted field, never a traceback
    assert "error=ValueError: bad token [redacted:jwt" in text.replace('"error":"', "error=")


def test_a_real_process_on_a_terminal_writes_console_lines_and_json_to_a_pipe(tmp_path):
    # `xypipe publish` away from a demo logs that it found no demo key (info), then refuses
    # the missing tape: run with stderr on a pseudo-terminal, then on a pipe.
    argv = [sys.executable, "-m", "xypipe", "publish", "--replay", "missing.tape",
            "--log-level", "info"]
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "300"}
    env.pop(ENV_FORMAT, None)
    status, _, seen = run_on_a_terminal(argv, tmp_path, env)
    assert status == 2
    assert b"\x1b[" in seen  # coloured
    log_line, error = [" ".join(line.split()) for line in shown(seen).splitlines()]
    assert log_line.split(" ", 1)[1] == ("INFO cli: no embedded demo key found; connecting "
                                         "without credentials [XY-NATS-023] "
                                         "looked_for=var/nats/auth/adapter.nk")
    assert error.startswith("xypipe publish: pipelines.publisher.stages[0] (publisher).replay: "
                            "expected the path of an existing tape file")
    piped = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=60, check=False)
    first = json.loads(piped.stderr.splitlines()[0])
    assert first["code"] == "XY-NATS-023" and first["level"] == "info"


# --------------------------------------------------------------------------- folding repeats


KEY = RepeatKey("xypipe.stage.dedupe", 30, "XY-SRC-002", "source sequences restarted at 1")


def test_the_folder_writes_the_first_lines_and_counts_the_rest_per_window():
    folder = RepeatFolder(RepeatPolicy(limit=3, window_s=10.0))
    verdicts = [folder.feed(KEY, t * 0.1) for t in range(40)]  # 40 lines in 4 s
    assert [v.write for v in verdicts] == [True] * 3 + [False] * 37
    assert all(v.summaries == () for v in verdicts)
    assert folder.due(9.99) == []
    assert folder.due(10.0) == [Summary(KEY, folded=37, opened=0.0, window_s=10.0)]
    assert folder.due(11.0) == []  # said once
    # A new window after the old one closed: written again, counted afresh.
    assert folder.feed(KEY, 12.0).write
    stats = folder.statistics()
    assert (stats.folded_total, stats.summaries_total, stats.open_windows) == (37, 1, 1)


def test_a_closed_window_is_summarised_by_the_next_line_of_any_kind():
    folder = RepeatFolder(RepeatPolicy(limit=1, window_s=5.0))
    other = RepeatKey("xypipe.x", 40, "XY-GEN-000", "boom")
    assert folder.feed(KEY, 0.0).write and not folder.feed(KEY, 1.0).write
    verdict = folder.feed(other, 6.0)
    assert verdict.write and verdict.summaries == (Summary(KEY, 1, 0.0, 5.0),)


def test_windows_without_folds_end_quietly_and_drain_counts_what_is_open():
    folder = RepeatFolder(RepeatPolicy(limit=2, window_s=5.0))
    folder.feed(KEY, 0.0)
    assert folder.due(100.0) == []
    for t in range(5):
        folder.feed(KEY, 200.0 + t)
    assert folder.next_due() == 205.0
    assert folder.drain() == [Summary(KEY, 3, 200.0, 5.0)]
    assert folder.next_due() is None


def test_a_zero_window_writes_everything():
    folder = RepeatFolder(RepeatPolicy(limit=1, window_s=0.0))
    assert all(folder.feed(KEY, 0.0).write for _ in range(100))


def test_keys_beyond_the_bound_are_written_not_folded():
    folder = RepeatFolder(RepeatPolicy(limit=1, window_s=5.0), max_keys=2)
    keys = [RepeatKey("l", 30, "XY-GEN-000", str(i)) for i in range(3)]
    for k in keys:
        folder.feed(k, 0.0)
    assert folder.feed(keys[2], 1.0).write  # not tracked: never folded, never lost
    assert folder.statistics().untracked_total == 2


def test_the_handler_folds_a_flood_into_one_summary_line(restore_logging):
    buf, clock = io.StringIO(), FakeClock()
    configure("info", stream=buf, format="json", repeats=RepeatPolicy(limit=3, window_s=10),
              clock=clock)
    log = get_logger("stage.dedupe")
    for i in range(40):
        clock.now = i * 0.25
        log.warning("source sequences restarted at 1; following the new session",
                    code="XY-SRC-002", restarted=i)
        log.info("not folded: info lines are never folded")
    clock.now = 10.0
    flush_repeats()
    lines = [x for x in json_lines(buf) if x.get("code") == "XY-SRC-002"]
    assert [x["restarted"] for x in lines[:3]] == [0, 1, 2]
    assert lines[3]["msg"] == ("source sequences restarted at 1; following the new session "
                               "(repeated 37 more times in 10 s)")
    assert (lines[3]["repeated"], lines[3]["level"], len(lines)) == (37, "warning", 4)
    assert sum(1 for x in json_lines(buf) if x["msg"].startswith("not folded")) == 40


def test_errors_are_folded_only_into_a_count_and_what_is_open_is_written_at_close(
        restore_logging, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    buf, clock = io.StringIO(), FakeClock()
    configure("info", stream=buf, format="console",
              repeats=RepeatPolicy(limit=2, window_s=60), clock=clock)
    for _ in range(7):
        get_logger("t").error("publish failed", code="XY-NATS-012")
    configure("info")  # replacing the handler closes it: its open window is summarised
    lines = [" ".join(line.split()) for line in buf.getvalue().splitlines()]
    assert len(lines) == 3
    assert lines[2].endswith("ERROR t: publish failed (repeated 5 more times in 60 s) "
                             "[XY-NATS-012] repeated=5 window_s=60")


async def test_the_summary_task_writes_a_closed_window_on_trio_time(restore_logging,
                                                                     autojump_clock):
    buf = io.StringIO()
    configure("info", stream=buf, format="json", repeats=RepeatPolicy(limit=1, window_s=10),
              clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(summarise_repeats, 1.0)
        for _ in range(5):
            get_logger("t").warning("stale", code="XY-HLT-001")
            await trio.sleep(0.5)
        await trio.sleep(7.0)  # 9.5 s after the first: still open
        assert [x.get("repeated") for x in json_lines(buf)] == [None]
        await trio.sleep(1.0)  # the window closed at 10 s; the task writes it by 10.5 s
        assert [x.get("repeated") for x in json_lines(buf)] == [None, 4]
        nursery.cancel_scope.cancel()


def test_the_installed_handler_is_replaced_not_stacked(restore_logging):
    configure("info", stream=io.StringIO())
    configure("info", stream=io.StringIO())
    import logging

    assert sum(isinstance(h, XyHandler) for h in logging.getLogger("xypipe").handlers) == 1
