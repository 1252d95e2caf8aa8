"""The stage model: what a stage is and what it gets from the runner.

A stage is a class with a frozen attrs ``Config`` and one ``async def run(self)``. It reads its
input from ``self.ctx.inbox`` (absent for a source) and writes to ``self.ctx.outbox`` (absent
for a sink). The runner closes the outbox when ``run`` returns, so ending a stage ends the
stream for its neighbour: shutdown is closing, not killing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import trio

from xypipe._degrade import Level, LevelWatch, Pressure
from xypipe._edge import EdgeReceiveChannel, EdgeSendChannel
from xypipe._health import PipelineWatchdog, Watch
from xypipe._log import Logger
from xypipe._metrics import Metrics


@attrs.frozen
class NoConfig:
    """For stages without options."""


@attrs.define(eq=False)
class StageContext:
    """Everything a running stage may use. Built by the runner (or by ``xypipe.testing``)."""

    pipeline: str
    name: str
    inbox: EdgeReceiveChannel[Any] | None
    outbox: EdgeSendChannel[Any] | None
    degradation: LevelWatch
    metrics: Metrics
    log: Logger
    #: The process's NATS connection (``xypipe._nats.NatsClient``) when the config has ``[nats]``.
    nats: Any = None
    #: The process's HTTP server (``xypipe._http.HttpServer``) when it serves one.
    http: Any = None
    #: Process-wide values shared between stages (e.g. the aggregator epoch).
    resources: dict[str, Any] = attrs.field(factory=dict)
    _ready: trio.Event = attrs.field(factory=trio.Event)
    #: The latest pressure the stage reported (see :meth:`report_pressure`).
    reported_pressure: Pressure | None = None
    #: The pipeline's staleness watchdog (shared by its stages; see :meth:`watch`).
    watchdog: PipelineWatchdog | None = None

    @property
    def level(self) -> Level:
        return self.degradation.level

    def report_pressure(self, value: float, source: str) -> None:
        """Tell the runner about a backlog its edges cannot see (e.g. a stream's lag).

        The runner folds the latest report into the pipeline's pressure at every sample, like
        an edge's budget use: 1.0 means "as full as this stage's budget allows".
        """
        self.reported_pressure = Pressure(value, source)

    def set_ready(self) -> None:
        """Tell the runner the stage is serving (counted by /healthz readiness)."""
        self._ready.set()

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def watch(self, stream: str, *, stale_after: float, gated: bool,
              position: int | None = None) -> Watch:
        """Watch an input stream's freshness; readiness then requires it to be fresh.

        ``gated=True``: stale only when the source is seen ahead (feed it
        :meth:`Watch.source`) and no data came for ``stale_after`` seconds — an idle source is
        not stale. ``gated=False``: data is promised every so often, so ``stale_after``
        seconds of silence is stale. ``position``: the last position already delivered (e.g.
        the stream sequence before the first one the feed will deliver). See
        :mod:`xypipe._watchdog`.
        """
        if self.watchdog is None:
            self.watchdog = PipelineWatchdog(self.metrics, self.log)
        return self.watchdog.watch(stream, stale_after=stale_after, gated=gated,
                                   position=position)


class Stage:
    """Base class for stages (built-in and plugins alike).

    Subclasses set ``Config`` to a frozen attrs class (validated when the config is loaded) and
    implement :meth:`run`. ``consumes``/``produces`` say whether the stage has an input and an
    output; a source is first in its pipeline, a sink last. ``ready_on_start`` stages count as
    ready as soon as ``run`` starts; others call ``self.ctx.set_ready()`` themselves (e.g. once
    subscribed).
    """

    Config: ClassVar[type[Any]] = NoConfig
    consumes: ClassVar[bool] = True
    produces: ClassVar[bool] = True
    ready_on_start: ClassVar[bool] = True
    #: The embedded bus role (:data:`xypipe._nats_roles.ROLES`) this stage's NATS work needs;
    #: None for stages that use no NATS or work with whatever role their process has.
    nats_role: ClassVar[str | None] = None

    def __init__(self, config: Any, ctx: StageContext) -> None:
        self.config = config
        self.ctx = ctx

    async def run(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run")

    # Helpers most stages want -------------------------------------------------------------

    @property
    def inbox(self) -> EdgeReceiveChannel[Any]:
        if self.ctx.inbox is None:
            raise RuntimeError(f"stage {self.ctx.name!r} has no input (it is first)")
        return self.ctx.inbox

    @property
    def outbox(self) -> EdgeSendChannel[Any]:
        if self.ctx.outbox is None:
            raise RuntimeError(f"stage {self.ctx.name!r} has no output (it is last)")
        return self.ctx.outbox


def _describe_options(config: type[Any], prefix: str) -> list[dict[str, Any]]:
    from xypipe._validate import expected_of

    options: list[dict[str, Any]] = []
    for f in attrs.fields(config):
        default: Any
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = f.default.factory()
        else:
            default = f.default
        if attrs.has(type(default)):
            options.extend(_describe_options(type(default), f"{prefix}{f.name}."))
            continue
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        options.append(
            {"name": f"{prefix}{f.name}", "type": str(typ), "default": default,
             "expects": expected_of(f.validator) or "",
             "doc": f.metadata.get("doc", "")}
        )
    return options


def describe_stage(cls: type[Any]) -> dict[str, Any]:
    """A stage's options, for ``xypipe stages``: name, type, default, what it expects (a nested
    table's options as ``table.option``)."""
    options = _describe_options(cls.Config, "")
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "summary": doc[0] if doc else "",
        "consumes": getattr(cls, "consumes", True),
        "produces": getattr(cls, "produces", True),
        "nats_role": getattr(cls, "nats_role", None),
        "options": options,
    }
