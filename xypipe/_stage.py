"""The stage model: what a stage is, what it declares, and what it gets from the runner.

A stage is a class generic over what it takes, what it gives and its config::

    class Conflate(Stage[Restore | Batch, Restore | list[DeltaOut] | list[Watermark],
                         ConflateConfig]):
        async def run(self) -> None:
            async for item in self.inbox:      # Restore | Batch
                ...
                await self.outbox.send(deltas)  # must be one of what it gives

A source takes ``Never`` (it has no inbox) and is first in its pipeline; a sink gives ``Never``
and is last. The three type arguments serve twice: mypy checks the stage's own code against
them, and the config loader reads them (:attr:`StageBase.types`) to check that each stage's
output fits its neighbour's input, so ``xypipe check`` refuses a wiring ``xypipe run`` could not
run (:mod:`xypipe._wiring`). What a stage needs from its process (``requires = {"nats"}``,
``{"http"}``) is checked the same way, and gives it a non-optional accessor
(:meth:`StageContext.require_nats`).

A stage reads ``self.inbox`` and writes ``self.outbox``; the runner closes the outbox when
``run`` returns, so ending a stage ends the stream for its neighbour: shutdown is closing, not
killing.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from typing import ClassVar, Generic, Literal, Never, TypeVar, cast

import attrs
import trio

from xypipe._degrade import Level, LevelWatch, Pressure
from xypipe._edge import EdgeReceiveChannel, EdgeSendChannel
from xypipe._errors import MissingRequirement
from xypipe._health import PipelineWatchdog, Watch
from xypipe._hints import Unchecked, describe, substitute
from xypipe._log import Logger
from xypipe._metrics import Metrics
from xypipe._validate import expected_of
from xypipe._worker import WorkerIdentity
from xypipe.abc import Clock, HttpRoutes, NatsClient

In = TypeVar("In")
Out = TypeVar("Out")
Cfg = TypeVar("Cfg")
T = TypeVar("T")

#: What a stage may need from its process: a NATS connection (``[nats]``) or the process's
#: HTTP server (``[http]`` / ``[processes.NAME].http`` enabled).
Requirement = Literal["nats", "http"]
REQUIREMENTS: tuple[Requirement, ...] = ("nats", "http")


@attrs.frozen
class NoConfig:
    """For stages without options."""


@attrs.frozen
class StageTypes:
    """What a stage class declares, read at run time: what it takes and gives and its config
    type (type expressions: classes, unions, ``list[X]``, ``Never``, type variables)."""

    takes: object
    gives: object
    config: object


# --------------------------------------------------------------------------- shared values


@attrs.frozen(eq=False)
class Shared(Generic[T]):
    """A typed key for a value the stages of one process share, made on first use::

        EPOCH = Shared("aggregator.epoch", lambda: [0])
        epoch = ctx.shared.get(EPOCH)   # list[int], the same list for every stage

    Keys compare by identity: define each once, at module level, next to its users.
    """

    name: str
    factory: Callable[[], T]


class SharedValues:
    """The process's shared values (one per runner; see :class:`Shared`)."""

    def __init__(self) -> None:
        self._values: dict[Shared[object], object] = {}

    def get(self, key: Shared[T]) -> T:
        # Keys are frozen and compare by identity, so a value is only ever stored under the key
        # whose factory made it: the cast restores the type the key carries.
        store = cast(dict[Shared[T], T], self._values)
        if key not in store:
            store[key] = key.factory()
        return store[key]

    def names(self) -> list[str]:
        return sorted(k.name for k in self._values)


class TrioClock:
    """The clock stages get by default: Trio's (the mock clock in tests) and the wall clock."""

    def now(self) -> float:
        return trio.current_time()

    def wall_us(self) -> int:
        return time.time_ns() // 1000


# --------------------------------------------------------------------------- the context


@attrs.define(eq=False)
class StageContext:
    """Everything a running stage may use. Built by the runner (or by ``xypipe.testing``)."""

    pipeline: str
    name: str
    inbox: EdgeReceiveChannel[object] | None
    outbox: EdgeSendChannel[object] | None
    degradation: LevelWatch
    metrics: Metrics
    log: Logger
    #: The process's NATS connection when the config has ``[nats]`` (else None; a stage that
    #: declares ``requires = {"nats"}`` uses :meth:`require_nats`).
    nats: NatsClient | None = None
    #: The process's HTTP server when it serves one (see :meth:`require_http`).
    http: HttpRoutes | None = None
    #: Values the stages of this process share (see :class:`Shared`).
    shared: SharedValues = attrs.field(factory=SharedValues)
    clock: Clock = attrs.field(factory=TrioClock)
    _ready: trio.Event = attrs.field(factory=trio.Event)
    #: The latest pressure the stage reported (see :meth:`report_pressure`).
    reported_pressure: Pressure | None = None
    #: The pipeline's staleness watchdog (shared by its stages; see :meth:`watch`).
    watchdog: PipelineWatchdog | None = None
    #: Which copy of its process this is (``workers = N``; see :mod:`xypipe._worker`).
    worker: WorkerIdentity = attrs.field(factory=WorkerIdentity.from_environ)

    @property
    def level(self) -> Level:
        return self.degradation.level

    def require_nats(self) -> NatsClient:
        """The NATS connection of a stage that declared ``requires = {"nats"}`` (the config
        loader made sure the process has one)."""
        if self.nats is None:
            raise MissingRequirement(self.pipeline, self.name, "nats")
        return self.nats

    def require_http(self) -> HttpRoutes:
        """The HTTP server of a stage that declared ``requires = {"http"}``."""
        if self.http is None:
            raise MissingRequirement(self.pipeline, self.name, "http")
        return self.http

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


# --------------------------------------------------------------------------- stages


class StageBase:
    """What the runner and the loader know of every stage: its declarations and ``run``.

    Stages subclass :class:`Stage` (generic); this untyped face is what a pipeline holds,
    whatever each stage takes and gives.
    """

    #: The frozen attrs class of the stage's options (from the third type argument of
    #: ``Stage[...]`` unless set explicitly).
    Config: ClassVar[type] = NoConfig
    #: Whether the stage has an input / an output (derived from the type arguments: a stage
    #: that takes ``Never`` is a source, one that gives ``Never`` a sink).
    consumes: ClassVar[bool] = True
    produces: ClassVar[bool] = True
    #: What the stage needs from its process; checked when the config is loaded.
    requires: ClassVar[frozenset[Requirement]] = frozenset()
    #: Ready as soon as ``run`` starts; others call ``self.ctx.set_ready()`` themselves.
    ready_on_start: ClassVar[bool] = True
    #: The embedded bus role (:data:`xypipe._nats_roles.ROLES`) this stage's NATS work needs;
    #: None for stages that use no NATS or work with whatever role their process has.
    nats_role: ClassVar[str | None] = None
    #: Whether a process running this stage defaults to ``workers = "auto"`` (as many copies
    #: as the config leaves cores free): true for stages whose copies serve independently
    #: from the same bus (the gateway), false for any whose copies would publish twice.
    scales_out: ClassVar[bool] = False
    #: What the class declares (set for every subclass of :class:`Stage`).
    types: ClassVar[StageTypes] = StageTypes(Unchecked, Unchecked, Unchecked)

    def __init__(self, config: object, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run")


class Stage(StageBase, Generic[In, Out, Cfg]):
    """Base class for stages (built-in and plugins alike): ``Stage[Takes, Gives, Config]``.

    Implement :meth:`run`. ``Takes`` is ``Never`` for a source, ``Gives`` ``Never`` for a
    sink; a pass-through stage is generic (``Stage[T, T, Cfg]`` with a ``TypeVar`` T: it gives
    whatever its upstream gives). The config class is validated when the config is loaded and
    reaches the stage as ``self.config``. See the module docstring.
    """

    def __init__(self, config: Cfg, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        self.config: Cfg = config

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = _declared_args(cls)
        if declared is None:
            return  # a plain subclass of a stage inherits its declarations
        takes, gives, config = declared
        own = cls.__dict__
        if "consumes" in own and not own["consumes"] and takes is Unchecked:
            takes = Never  # an untyped source, declared the old way
        if "produces" in own and not own["produces"] and gives is Unchecked:
            gives = Never
        if "Config" not in own and isinstance(config, type) and config is not Unchecked:
            cls.Config = config
        if "consumes" not in own:
            cls.consumes = takes is not Never
        if "produces" not in own:
            cls.produces = gives is not Never
        cls.types = StageTypes(takes, gives, config)

    # Helpers most stages want -------------------------------------------------------------

    @property
    def inbox(self) -> EdgeReceiveChannel[In]:
        if self.ctx.inbox is None:
            raise RuntimeError(f"stage {self.ctx.name!r} has no input (it is first)")
        # The loader checked that the upstream stage gives what this one takes.
        return cast(EdgeReceiveChannel[In], self.ctx.inbox)

    @property
    def outbox(self) -> EdgeSendChannel[Out]:
        if self.ctx.outbox is None:
            raise RuntimeError(f"stage {self.ctx.name!r} has no output (it is last)")
        return cast(EdgeSendChannel[Out], self.ctx.outbox)


def _declared_args(cls: type) -> tuple[object, object, object] | None:
    """The ``Stage[Takes, Gives, Config]`` arguments of ``cls``'s own bases, resolved through
    generic intermediate classes; None when it names none (a plain subclass)."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if origin is Stage:
            takes, gives, config = typing.get_args(base)
            return takes, gives, config
        if isinstance(origin, type) and issubclass(origin, Stage):
            params = getattr(origin, "__parameters__", ())
            bind = dict(zip(params, typing.get_args(base), strict=False))
            t = origin.types
            return (substitute(t.takes, bind), substitute(t.gives, bind),
                    substitute(t.config, bind))
    if any(isinstance(b, type) and issubclass(b, Stage) and b is not Stage
           for b in cls.__bases__):
        return None
    return Unchecked, Unchecked, Unchecked  # `class S(Stage)`: declares nothing


# --------------------------------------------------------------------------- describing


@attrs.frozen
class OptionInfo:
    """One option of a stage's config, as ``xypipe stages`` lists it."""

    name: str
    type: str
    default: object
    expects: str
    doc: str


@attrs.frozen
class StageInfo:
    """What ``xypipe stages`` says about a stage class."""

    summary: str
    consumes: bool
    produces: bool
    takes: str
    gives: str
    requires: tuple[str, ...]
    nats_role: str | None
    options: tuple[OptionInfo, ...]

    @property
    def kind(self) -> str:
        return ("source" if not self.consumes else "sink" if not self.produces
                else "transform")


def _describe_options(config: type, prefix: str) -> list[OptionInfo]:
    options: list[OptionInfo] = []
    for f in attrs.fields(config):
        default: object
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
        options.append(OptionInfo(name=f"{prefix}{f.name}", type=str(typ), default=default,
                                  expects=expected_of(f.validator) or "",
                                  doc=str(f.metadata.get("doc", ""))))
    return options


def describe_stage(cls: type[StageBase]) -> StageInfo:
    """A stage's options, for ``xypipe stages``: name, type, default, what it expects (a nested
    table's options as ``table.option``), and what it takes, gives and requires."""
    doc = (cls.__doc__ or "").strip().splitlines()
    return StageInfo(
        summary=doc[0] if doc else "",
        consumes=cls.consumes,
        produces=cls.produces,
        takes=describe(cls.types.takes),
        gives=describe(cls.types.gives),
        requires=tuple(sorted(cls.requires)),
        nats_role=cls.nats_role,
        options=tuple(_describe_options(cls.Config, "")),
    )
