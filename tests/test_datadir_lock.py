"""One ``xypipe run`` per embedded data directory.

The lock itself (exclusive, never waits, dropped on release, a clear reason when the directory
cannot be used), then two real runs on one directory: the second is refused at once with one
line and ``XY-EMB-010`` and starts no nats-server, while the first keeps serving — also after
its nats-server was killed and restarted in place, because the supervisor holds the lock for
the server's whole supervised life and hands it to every nats-server it starts.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest
import trio
from test_demo import free_port, nats_servers_for, wait_healthy
from test_supervisor import ROOT, _is, running_tree, tree_config

from xypipe._datadir_lock import LOCK_NAME, DataDirLock, Holder, holder
from xypipe._errors import DataDirLocked, DataDirUnusable, EmbeddedServerError

GUARD_S = 60  # hang guard for process starts on a loaded machine


def test_a_locked_directory_is_refused_at_once_and_free_again_after_release(tmp_path):
    data = tmp_path / "nats"
    assert holder(data) is None
    with DataDirLock.acquire(data) as first:
        assert (data / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert holder(data) == Holder(os.getpid())
        # A second open of the lock file is another description: refused, not re-entered.
        with pytest.raises(DataDirLocked) as refused:
            DataDirLock.acquire(data)
        assert refused.value.code == "XY-EMB-010"
        assert isinstance(refused.value, EmbeddedServerError)
        message = str(refused.value)
        assert "\n" not in message
        assert f"{data} is in use by another xypipe run (pid {os.getpid()})" in message
        assert first.fd >= 0
    assert holder(data) is None
    with DataDirLock.acquire(data):
        pass


def test_a_directory_that_cannot_be_created_says_why(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirUnusable, match=r"cannot lock the embedded NATS data directory "
                                              r".*a-file/nats: Not a directory") as err:
        DataDirLock.acquire(blocker / "nats")
    assert err.value.code == "XY-EMB-011"


def test_the_lock_outlives_its_owner_in_a_child_that_inherited_it(tmp_path):
    """What the supervisor does for nats-server: the child holds the store while it runs."""
    data = tmp_path / "nats"
    lock = DataDirLock.acquire(data)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, pass_fds=(lock.fd,))
    try:
        lock.release()
        with pytest.raises(DataDirLocked):
            DataDirLock.acquire(data)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=GUARD_S)
    with DataDirLock.acquire(data):
        pass


def _holds(pid: int, path: pathlib.Path) -> bool:
    fds = pathlib.Path(f"/proc/{pid}/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


@pytest.mark.nats
async def test_a_second_run_on_the_same_data_dir_fails_at_once_with_one_line(tmp_path):
    path, ports = tree_config(tmp_path, nats_port=free_port(), children={"left": '"on-failure"'})
    data = tmp_path / "nats"
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    # Same data directory, nothing else shared: other ports, so only the lock can refuse it.
    second, _ = tree_config(second_dir, nats_port=free_port(), children={"left": '"on-failure"'})
    second.write_text(second.read_text().replace(str(second_dir / "nats"), str(data)))

    async def second_run() -> tuple[int, str]:
        done = await trio.run_process(
            [sys.executable, "-m", "xypipe", "run", str(second)], cwd=ROOT,
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
        return done.returncode, done.stderr.decode()

    async with running_tree(path) as tree:
        for port in ports.values():
            await wait_healthy(port, GUARD_S)
        nats_pid = await tree.started_pid("nats")
        assert _holds(nats_pid, data / LOCK_NAME), "nats-server should hold the lock too"

        with trio.fail_after(GUARD_S):
            code, err = await second_run()
        assert code == 1, err
        reason = (f"xypipe: the embedded NATS data directory {data} is in use by another "
                  f"xypipe run (pid {tree.proc.pid})")
        assert [line for line in err.splitlines() if line.startswith("xypipe:")] == [
            line for line in err.splitlines() if line.startswith(reason)], err
        assert reason in err and "XY-EMB-010" in err
        assert "last log lines" not in err  # no dump of a nats-server's log
        assert nats_servers_for(data) == [nats_pid]

        # The server restarted in place is still the only one: the lock was never let go.
        os.kill(nats_pid, signal.SIGKILL)
        restarted = await tree.wait_for(lambda x: _is(x, "process restarted", "nats"))
        assert _holds(restarted["pid"], data / LOCK_NAME)
        with trio.fail_after(GUARD_S):
            code, err = await second_run()
        assert code == 1 and "XY-EMB-010" in err, err
        assert nats_servers_for(data) == [restarted["pid"]]
        for port in ports.values():
            assert (await wait_healthy(port, GUARD_S))["ready"]
        os.killpg(tree.proc.pid, signal.SIGINT)
    assert tree.proc.returncode == 0
    assert nats_servers_for(data) == []
    assert holder(data) is None
