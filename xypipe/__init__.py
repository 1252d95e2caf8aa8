"""xypipe: Trio-based pipelines that move real-time market data from NATS to browsers.

Public API. Everything in ``_``-prefixed modules is internal and may change.

Writing a stage: generic over what it takes, what it gives and its config (the config loader
checks that neighbours fit, ``xypipe check`` included)::

    import attrs, xypipe

    @attrs.frozen
    class DoubleConfig:
        factor: int = attrs.field(default=2, validator=xypipe.in_range(1, 100))

    class Double(xypipe.Stage[int, int, DoubleConfig]):
        \"\"\"Multiply every number by ``factor``.\"\"\"

        async def run(self) -> None:
            async for x in self.inbox:
                await self.outbox.send(x * self.config.factor)

What a stage may use from its process (NATS, HTTP routes, the clock) is typed in
:mod:`xypipe.abc`.
"""

from xypipe._config import (
    AppConfig,
    PipelineConfig,
    RestartPolicy,
    StageDecl,
    load_config,
    parse_config,
)
from xypipe._degrade import (
    DegradationController,
    DegradePolicy,
    Level,
    LevelWatch,
    Pressure,
    Transition,
)
from xypipe._edge import Budget, Edge, EdgeStatistics
from xypipe._errors import (
    AuthError,
    BridgeError,
    ConfigError,
    ContractError,
    EmbeddedServerError,
    MissingRequirement,
    PluginError,
    ProtocolError,
    StageError,
    WiringError,
    XyError,
)
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._registry import resolve_stage, stage_entry_points
from xypipe._runner import PipelineRun, Runner
from xypipe._stage import NoConfig, Shared, SharedValues, Stage, StageContext
from xypipe._validate import Invalid, in_range, non_empty, one_of, subject_pattern, subject_patterns

__version__ = "0.1.0"

__all__ = [
    "AppConfig",
    "AuthError",
    "BridgeError",
    "Budget",
    "ConfigError",
    "ContractError",
    "DegradationController",
    "DegradePolicy",
    "Edge",
    "EdgeStatistics",
    "EmbeddedServerError",
    "Invalid",
    "Level",
    "LevelWatch",
    "Metrics",
    "MissingRequirement",
    "NoConfig",
    "PipelineConfig",
    "PipelineRun",
    "PluginError",
    "Pressure",
    "ProtocolError",
    "RestartPolicy",
    "Runner",
    "Shared",
    "SharedValues",
    "Stage",
    "StageContext",
    "StageDecl",
    "StageError",
    "Transition",
    "WiringError",
    "XyError",
    "__version__",
    "get_logger",
    "in_range",
    "load_config",
    "non_empty",
    "one_of",
    "parse_config",
    "resolve_stage",
    "stage_entry_points",
    "subject_pattern",
    "subject_patterns",
]
