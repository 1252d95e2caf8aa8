"""Every side of a scaling run, read from /proc: which processes they are and the CPU each
used over a window, the machine's busy share, and where the bottleneck is.

``xypipe run`` of a config with ``[processes]`` is a supervisor whose children are the
workers; a child knows itself by ``XYPIPE_PROCESS`` / ``XYPIPE_WORKER`` in its environment
(``xypipe/_worker.py``), which is how a worker's pid is told from its siblings' here. The
connections a gateway worker holds are counted from its socket descriptors and
``/proc/net/tcp``: no metric of the process under test is needed to know how the kernel spread
them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import attrs

TICK = os.sysconf("SC_CLK_TCK")
#: A side at or above this share of one core is called saturated.
SATURATED = 0.9
#: Other work on the machine above this share of a core makes a window's figures unfit to
#: compare (they measure the competition, not the sides).
DISTURBED = 0.25


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports free now (a process of N workers
    serves worker ``i``'s own /metrics on ``metrics_port + i``)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise OSError(f"no {count} consecutive free ports found")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of ``pid`` (``None`` once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_jiffies() -> tuple[int, int]:
    """``(busy, total)`` jiffies of every core together (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children first)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop(0)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def workers(supervisor: int, process: str) -> dict[int, int]:
    """``{worker index: pid}`` of the children of ``supervisor`` running ``process``.

    A child started before workers existed carries no ``XYPIPE_WORKER``: it is worker 0.
    Children of workers (none today) are skipped: their parent is the worker."""
    out: dict[int, int] = {}
    for pid in children(supervisor):
        env = environ(pid)
        if env.get("XYPIPE_PROCESS", process) != process:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--process" in cmd and cmd[cmd.index(b"--process") + 1].decode() != process:
            continue
        if b"xypipe" not in b" ".join(cmd):
            continue
        index = int(env.get("XYPIPE_WORKER", "0") or 0)
        out.setdefault(index, pid)
    return out


def established(pid: int, port: int) -> int:
    """TCP connections ``pid`` holds that were accepted on local ``port``."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    hexport = f"{port:04X}"
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address, state 01 = ESTABLISHED, inode in column 9
            if cols[1].endswith(":" + hexport) and cols[3] == "01" and cols[9] in inodes:
                n += 1
    return n


@attrs.frozen
class Reading:
    """Every side's CPU seconds and the machine's jiffies at one instant."""

    at: float
    cpu: Mapping[str, float | None]
    machine: tuple[int, int]


def read(sides: Mapping[str, int], at: float) -> Reading:
    return Reading(at, {name: cpu_seconds(pid) for name, pid in sides.items()},
                   machine_jiffies())


def window(a: Reading, b: Reading) -> dict[str, object]:
    """Each side's CPU between two readings as a share of one core, and the machine's busy
    share of all its cores."""
    span = max(b.at - a.at, 1e-9)
    cpu: dict[str, float] = {}
    for name, c0 in a.cpu.items():
        c1 = b.cpu.get(name)
        if c0 is not None and c1 is not None:
            cpu[name] = round((c1 - c0) / span, 4)
    busy = b.machine[0] - a.machine[0]
    total = max(b.machine[1] - a.machine[1], 1)
    cores = os.cpu_count() or 1
    # What the machine did besides the sides measured (in cores): other work on a shared
    # machine, which takes the cores the sides would have had.
    others = max(0.0, busy / total * cores - sum(cpu.values()))
    return {"seconds": round(span, 3), "cpu": cpu, "machine_busy": round(busy / total, 4),
            "cores": cores, "others": round(others, 3)}


def bottleneck(win: Mapping[str, object], *, clients: str = "loadgen") -> dict[str, object]:
    """Where the limit is in one window: the sides at >= 90 % of a core, whether the machine's
    cores were all busy, and whether the load generators (names starting ``clients``) were
    among the saturated."""
    cpu = win.get("cpu", {})
    assert isinstance(cpu, dict)
    hot = sorted((n for n, c in cpu.items() if c >= SATURATED), key=lambda n: -cpu[n])
    busy = float(win.get("machine_busy", 0.0))  # type: ignore[arg-type]
    machine = busy >= SATURATED
    parts = [f"{n} at {cpu[n]:.0%} of a core" for n in hot]
    if machine:
        parts.append(f"the machine's {win.get('cores')} cores {busy:.0%} busy")
    others = float(win.get("others", 0.0))  # type: ignore[arg-type]
    disturbed = others >= DISTURBED
    if disturbed:
        parts.append(f"other processes took {others:.0%} of a core")
    return {"saturated": hot, "machine_saturated": machine, "disturbed": disturbed,
            "clients_bottleneck": any(n.startswith(clients) for n in hot),
            "text": "; ".join(parts) if parts else "no side saturated"}


def ceiling(win: Mapping[str, object], rate: float, workers: str) -> dict[str, object]:
    """The rate this machine could carry at the costs measured in one window: each side's CPU
    per unit of ``rate`` (a tick ingested, a frame delivered) extrapolated until either one of
    the ``workers`` (names starting so) fills its core or all sides together fill every core.
    An estimate from one window's costs, not a measurement: it says which limit comes first."""
    cpu = win.get("cpu", {})
    assert isinstance(cpu, dict)
    cores = int(win.get("cores", os.cpu_count() or 1))  # type: ignore[call-overload]
    if rate <= 0 or not cpu:
        return {"rate": 0.0, "limited_by": "nothing measured"}
    cost = {n: c / rate for n, c in cpu.items()}
    limits = {n: 1 / c for n, c in cost.items() if n.startswith(workers) and c > 0}
    machine = cores / max(sum(cost.values()), 1e-12)
    worst = min(limits, key=lambda n: limits[n], default=None)
    if worst is not None and limits[worst] < machine:
        return {"rate": limits[worst], "limited_by": f"{worst} at a full core"}
    return {"rate": machine, "limited_by": f"the machine's {cores} cores (every side together)"}
