"""One exception tree for the whole project.

Every error carries a stable ``code`` (``XY-<AREA>-<NNN>``) that also appears in the JSON log
line and in ``docs/observability/field-dictionary.md``. Third-party errors (nats-py, wsproto,
protobuf, jwt) are caught in their adapter module and re-raised as one of these, so nothing
outside an adapter ever has to know which library failed.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

E = TypeVar("E", bound=BaseException)


def find_in_group(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` inside (possibly nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = find_in_group(sub, kind)
            if found is not None:
                return found
    return None


def sole_leaf(exc: BaseException) -> BaseException:
    """Unwrap groups that hold exactly one exception (Trio nurseries wrap every error)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class XyError(Exception):
    """Base of every error xypipe raises on purpose."""

    code: ClassVar[str] = "XY-GEN-000"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def __str__(self) -> str:
        return self.message


class ConfigError(XyError):
    """A configuration file or table is invalid. ``problems`` lists every finding, one per line."""

    code = "XY-CFG-001"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(XyError):
    """A stage could not be found or does not satisfy the stage protocol."""

    code = "XY-PLG-001"


class StageError(XyError):
    """A stage raised; names the pipeline and stage so the operator knows where to look."""

    code = "XY-STG-001"

    def __init__(self, pipeline: str, stage: str, cause: BaseException) -> None:
        cause = sole_leaf(cause)
        self.pipeline = pipeline
        self.stage = stage
        self.cause = cause
        super().__init__(
            f"pipeline {pipeline!r}, stage {stage!r} failed: {type(cause).__name__}: {cause}"
        )


class ContractError(XyError):
    """Bytes on the wire do not decode as the contract says."""

    code = "XY-CON-001"


class BridgeError(XyError):
    """The NATS bridge failed: connect, publish, request, JetStream."""

    code = "XY-NATS-001"


class NatsTimeout(BridgeError):
    code = "XY-NATS-002"


class NatsNotFound(BridgeError):
    """A JetStream message, stream or key does not exist."""

    code = "XY-NATS-003"


class EmbeddedServerError(XyError):
    """The embedded nats-server could not be started."""

    code = "XY-EMB-001"


class AuthError(XyError):
    """A client failed authentication (bad token, expired, wrong audience...)."""

    code = "XY-AUTH-001"


class ProtocolError(XyError):
    """A peer broke the wire protocol. ``remote`` says whether it was the peer or us."""

    code = "XY-PROTO-001"

    def __init__(self, message: str, *, code: str | None = None, remote: bool = True) -> None:
        super().__init__(message, code=code)
        self.remote = remote


class NatsNoResponders(BridgeError):
    """A request found nobody subscribed to its subject."""

    code = "XY-NATS-004"


class NatsConnectionError(BridgeError):
    """Cannot connect to NATS, or the connection is closed."""

    code = "XY-NATS-005"


class NatsBackpressure(BridgeError):
    """Outgoing messages cannot be queued: the bridge's publish queue is full, or nats-py's
    reconnect buffer is full while the server is away."""

    code = "XY-NATS-006"


class NatsSlowConsumer(BridgeError):
    """A subscription fell behind and NATS (client or server side) dropped messages for it."""

    code = "XY-NATS-007"


class SourceDataError(ContractError):
    """A source message (``xy.src.*``/``xy.ref.*``) is malformed or contradicts its subject;
    the aggregator counts it in ``src_bad_total{reason}`` and skips it."""

    code = "XY-SRC-001"


#: A source symbol re-anchored: ``reanchor_after`` consecutive, mutually consistent ticks out
#: of its bounds (a venue renumbering, a real price move) made the last of them the new anchor.
SRC_REANCHOR = "XY-SRC-003"


class RebuildError(XyError):
    """A restarted aggregator could not continue its sequence (no snapshot, missing source
    history, epochs that disagree) and starts a new epoch; clients resynchronise."""

    code = "XY-AGG-001"


class NatsPermissionDenied(BridgeError):
    """The NATS server refused a publish or subscribe under the user's permissions."""

    code = "XY-NATS-008"
