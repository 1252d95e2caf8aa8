"""Wiring: do a pipeline's stages fit together, and does their process give what they need?

Checked when a config is loaded (``xypipe check`` and ``xypipe run`` alike) and again by the
runner before it starts anything, from what each stage class declares
(:class:`~xypipe._stage.StageTypes`, ``requires``):

* the first stage is a source (takes ``Never``), the last a sink (gives ``Never``), and no
  source or sink sits anywhere else;
* what each stage gives fits what the next one takes (:func:`xypipe._hints.fits`; a
  pass-through stage generic in ``T`` gives what it was given);
* each stage's ``requires`` is met: ``nats`` needs a ``[nats]`` section, ``http`` the
  process's HTTP server (``[http]`` or ``[processes.NAME.http]`` enabled);
* stage names are unique in their pipeline.

Every problem names the pipeline, the stage (index and name), what was expected and what was
got, like the loader's other messages::

    pipelines.agg.stages[1] (conflate): expected input Restore | Batch, got int from
        stages[0] (counting_source)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from xypipe._hints import describe, fits, substitute
from xypipe._stage import StageBase
from xypipe._validate import show

__all__ = ["DeclaredStage", "Provides", "pipeline_problems"]


class DeclaredStage(Protocol):
    """A stage as the config declares it (``xypipe._config.StageDecl``)."""

    @property
    def index(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def stage_cls(self) -> type[StageBase]: ...

    @property
    def where(self) -> str: ...


@attrs.frozen
class Provides:
    """What a process gives the stages it runs."""

    process: str
    nats: bool
    http: bool
    #: Where the process's HTTP server is configured, for messages (``[http]``...).
    http_table: str

    def missing(self, requirement: str) -> str | None:
        """What is missing for ``requirement``, as "expected ..., got ..."; None if met."""
        if requirement == "nats" and not self.nats:
            return "expected a [nats] section (this stage requires NATS), got none"
        if requirement == "http" and not self.http:
            return (f"expected process {self.process!r} to serve HTTP (this stage requires it: "
                    f"{self.http_table} enabled = true), got {self.http_table} enabled = false")
        return None


def pipeline_problems(path: str, stages: Sequence[DeclaredStage],
                      provides: Provides | None) -> list[str]:
    """Every wiring problem of the pipeline at ``path`` (``pipelines.NAME``), in stage order.

    ``provides`` is None when the process's tables are themselves invalid (reported
    elsewhere): requirements are then not checked.
    """
    problems = _duplicate_names(path, stages)
    last = len(stages) - 1
    flow: object = None  # what the previous stage gives, its type variables bound
    for i, s in enumerate(stages):
        cls, where = s.stage_cls, f"{path}.{s.where}"
        takes, gives = cls.types.takes, cls.types.gives
        bind: dict[object, object] = {}
        if i == 0 and cls.consumes:
            problems.append(f"{where}: expected a source first in the pipeline (a stage that "
                            f"takes no input), got a stage that takes {describe(takes)}")
        if i > 0:
            prev = stages[i - 1]
            if not cls.consumes:
                problems.append(
                    f"{where}: expected a stage that takes the output of stages[{i - 1}] "
                    f"({prev.name}), got a source (it takes no input, so it must be first)")
            elif prev.stage_cls.produces and not fits(flow, takes, bind):
                problems.append(f"{where}: expected input {describe(takes)}, got "
                                f"{describe(flow)} from stages[{i - 1}] ({prev.name})")
        if i < last and not cls.produces:
            problems.append(
                f"{where}: expected a stage that gives output to stages[{i + 1}] "
                f"({stages[i + 1].name}), got a sink (it gives nothing, so it must be last)")
        if i == last and cls.produces:
            problems.append(f"{where}: expected a sink last in the pipeline (a stage that gives "
                            f"nothing), got a stage that gives {describe(gives)} with no stage "
                            "after it to take it")
        flow = substitute(gives, bind)
        if provides is not None:
            for requirement in sorted(cls.requires):
                missing = provides.missing(requirement)
                if missing is not None:
                    problems.append(f"{where}: {missing}")
    return problems


def _duplicate_names(path: str, stages: Sequence[DeclaredStage]) -> list[str]:
    names = [s.name for s in stages]
    for s in stages:
        if names.count(s.name) > 1:
            return [f"{path}.{s.where}.name: expected a name unique in the pipeline, "
                    f"got {show(s.name)} {names.count(s.name)} times; set `name` on each"]
    return []
