"""The demo's state directory (``var/demo/`` by default): what ``demo up`` and its helpers
started, where their logs are, and how to reach them.

::

    var/demo/
      demo.json         the tree: pid + start time of `xypipe run`, config, URLs (demo up)
      demo.log          its log (JSON lines of every process of the tree)
      publisher.json    an extra `xypipe publish` (demo publisher start), publisher.log
      prometheus.json   Prometheus (demo observe), prometheus.log, prometheus.yml, prometheus/

A record is written (atomically) as soon as its process is started, so ``demo down`` can stop a
demo that never became ready; it is removed once the process is gone. A record whose process
is not running any more is stale, and the commands treat it as absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

import attrs
import cattrs

from xypipe._demo._layout import Layout
from xypipe._demo._procs import Launched, running
from xypipe._errors import DEMO_STATE_UNREADABLE
from xypipe._log import get_logger

__all__ = ["DEFAULT_STATE_DIR", "HelperState", "StateDir", "TreeState"]

#: Relative to the directory the demo runs in, like the data directory ``var/nats``.
DEFAULT_STATE_DIR = "var/demo"

_log = get_logger("demo")
_converter = cattrs.Converter(forbid_extra_keys=True)
T = TypeVar("T")


@attrs.frozen
class TreeState:
    """A demo tree started by ``demo up``."""

    process: Launched
    #: The config, absolute; ``cwd`` is where it runs (relative paths in it start there).
    config: str
    cwd: str
    layout: Layout
    since: str


@attrs.frozen
class HelperState:
    """A process started beside the tree (the extra publisher, Prometheus)."""

    process: Launched
    #: Where it is reached (Prometheus's web address), if anywhere.
    url: str | None = None


class StateDir:
    """The files of one state directory."""

    TREE = "demo"
    PUBLISHER = "publisher"
    PROMETHEUS = "prometheus"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def record(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    @property
    def prometheus_config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus"

    def write(self, name: str, state: TreeState | HelperState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.record(name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_converter.unstructure(state), indent=2) + "\n")
        os.replace(tmp, path)

    def _read(self, name: str, cls: type[T]) -> T | None:
        path = self.record(name)
        try:
            return _converter.structure(json.loads(path.read_text()), cls)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, cattrs.BaseValidationError) as exc:
            _log.warning("demo state file unreadable; treated as absent",
                         code=DEMO_STATE_UNREADABLE, path=str(path), error=str(exc))
            return None

    def tree(self) -> TreeState | None:
        """The recorded tree, running or not."""
        return self._read(self.TREE, TreeState)

    def helper(self, name: str) -> HelperState | None:
        return self._read(name, HelperState)

    def live_tree(self) -> TreeState | None:
        """The recorded tree if it still runs."""
        state = self.tree()
        return state if state is not None and running(state.process) is not None else None

    def live_helper(self, name: str) -> HelperState | None:
        state = self.helper(name)
        return state if state is not None and running(state.process) is not None else None

    def forget(self, name: str) -> None:
        self.record(name).unlink(missing_ok=True)
