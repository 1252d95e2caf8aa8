"""Which worker of which process this is: a process declared with ``workers = N`` runs N
copies, and each copy needs a name of its own that survives its restarts (an aggregator's
ownership leases are held by that name, so a restarted worker takes its share back).

The supervisor passes the identity to each child in its environment; a process started any
other way (a test, ``xypipe run`` of a single-process config) is worker 0 of 1.

How many copies ``workers = "auto"`` means is decided here too (:func:`auto_workers`): the cores
this process may use that the config's other child processes leave free, at least one.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

import attrs

PROCESS_ENV = "XYPIPE_PROCESS"
WORKER_ENV = "XYPIPE_WORKER"
WORKERS_ENV = "XYPIPE_WORKERS"
#: Which rollout generation this copy is (0 = started with the tree; a rollout's successor of a
#: copy runs beside it with the next one, so the two need different ``member`` names).
GENERATION_ENV = "XYPIPE_GENERATION"
#: A loopback port the supervisor picked for this copy alone: its /healthz and /metrics there
#: are what a rollout reads (the shared and private ports may answer for another copy).
CONTROL_PORT_ENV = "XYPIPE_CONTROL_PORT"


@attrs.frozen
class WorkerIdentity:
    #: The config's process name ("" when the process runs a config's pipelines itself).
    process: str = ""
    #: This copy's index, 0 .. count - 1.
    index: int = 0
    #: How many copies of the process the config runs.
    count: int = 1
    host: str = attrs.field(factory=socket.gethostname)
    #: The rollout generation (0 until a rollout replaces this copy).
    generation: int = 0
    #: The supervisor's control port for this copy (None: not supervised, or not told).
    control_port: int | None = None

    @property
    def member(self) -> str:
        """A name unique in a cluster and stable across restarts: ``host/process.index``
        (``host/process.index_gG`` for a rollout's generation G, which runs beside its
        predecessor)."""
        base = f"{self.host}/{self.process or 'main'}.{self.index}"
        return f"{base}_g{self.generation}" if self.generation else base

    def environ(self) -> dict[str, str]:
        """What a child needs in its environment to know itself."""
        env = {PROCESS_ENV: self.process, WORKER_ENV: str(self.index),
               WORKERS_ENV: str(self.count), GENERATION_ENV: str(self.generation)}
        if self.control_port is not None:
            env[CONTROL_PORT_ENV] = str(self.control_port)
        return env

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> WorkerIdentity:
        env = os.environ if env is None else env
        try:
            index = int(env.get(WORKER_ENV, "0"))
            count = int(env.get(WORKERS_ENV, "1"))
        except ValueError:
            index, count = 0, 1
        try:
            generation = max(0, int(env.get(GENERATION_ENV, "0")))
        except ValueError:
            generation = 0
        port_text = env.get(CONTROL_PORT_ENV, "")
        control = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
        return cls(process=env.get(PROCESS_ENV, ""), index=index, count=max(count, 1),
                   generation=generation, control_port=control)

    @property
    def supervised(self) -> bool:
        """Started by a supervisor that may run a successor beside it (a rollout)."""
        return self.control_port is not None


#: Most copies of one process a config may ask for (each is a whole Python process).
MAX_WORKERS = 256


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or ``taskset``
    narrows), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def ports_shared() -> bool:
    """Whether copies of a process can share a port here: ``SO_REUSEPORT`` as Linux has it,
    which spreads connections across the sockets (macOS and the BSDs accept the option but hand
    every connection to one socket; Windows lacks it)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def auto_workers(cores: int, others: int) -> int:
    """``workers = "auto"``: the cores the config leaves free — ``cores`` minus the ``others``
    child processes the same config runs (each keeps a core busy) — and never fewer than one,
    nor more than :data:`MAX_WORKERS`. On a 2-core machine beside one other process: 1."""
    return max(1, min(MAX_WORKERS, cores - others))


__all__ = ["MAX_WORKERS", "WorkerIdentity", "auto_workers", "ports_shared", "usable_cores"]
