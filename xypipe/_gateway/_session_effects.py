"""What a browser session asks its shell to do: effects as values, and the errors behind them.

A :class:`~xypipe._gateway._session.Session` (and the parts it delegates to) never does I/O: it
appends effects to an :class:`Effects` buffer — send this frame, subscribe the hub to that
group, close with this code, write this audit line — and the connection carries them out in
order (``Session.take_effects``).
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from xypipe._degrade import Transition
from xypipe._errors import GW_UNKNOWN_GROUP, PROTO_REMOTE_ERROR, ProtocolError
from xypipe._gateway._throttle import Lockout
from xypipe.contracts import ClientMetrics, Error, ErrorCode, ResumePoint, ServerFrame

#: WebSocket close codes: ``4000 + ErrorCode`` for protocol errors, plus the standard ones.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_BASE = 4000
#: A draining gateway worker closes a client that has not moved after its GoAway: reconnect
#: at once and resume (outside ``4000 + ErrorCode``: it is not an error).
CLOSE_DRAINING = 4100


def close_code(code: int) -> int:
    """The WebSocket close code for a fatal :class:`ErrorCode`."""
    return CLOSE_BASE + int(code)


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (its frame, its timing)."""

    code: ClassVar[str] = PROTO_REMOTE_ERROR

    def __init__(self, message: str, error_code: ErrorCode, *, fatal: bool, ref_id: int = 0,
                 group: str = "") -> None:
        super().__init__(message, remote=True)
        self.error_code = error_code
        self.fatal = fatal
        self.ref_id = ref_id
        self.group = group


class UnknownGroupError(RemoteProtocolError):
    """A well-formed group the aggregator does not publish (not in the known-groups list)."""

    code: ClassVar[str] = GW_UNKNOWN_GROUP


@attrs.frozen
class Send:
    """Send this control frame (ahead of any queued market data)."""

    frame: ServerFrame


@attrs.frozen
class SubscribeGroup:
    group: str
    shards: frozenset[int]  # empty = every shard
    ref_id: int = 0


@attrs.frozen
class UnsubscribeGroup:
    group: str


@attrs.frozen
class ResumeGroup:
    group: str
    points: tuple[ResumePoint, ...]
    ref_id: int = 0


@attrs.frozen
class RequestSnapshot:
    group: str
    ref_id: int = 0


@attrs.frozen
class PauseGroups:
    """The full set of this connection's groups that must not flow now (L3, operator flag)."""

    groups: frozenset[str]


@attrs.frozen
class LevelChanged:
    transition: Transition


@attrs.frozen
class ClientReport:
    metrics: ClientMetrics


@attrs.frozen
class Audit:
    """An audit line: ``action`` by ``principal`` with ``outcome`` (``allowed``/``denied``)."""

    action: str
    outcome: str
    fields: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class AuthThrottled:
    """A hello was refused unchecked: its address is locked out (counted, not audited)."""

    address: str
    retry_after_s: float


@attrs.frozen
class AuthLockedOut:
    """This hello's failure locked its address out: one audit summary line."""

    lockout: Lockout


@attrs.frozen
class ProtocolViolation:
    """The peer broke a rule; counted and logged by the connection (the Error frame is a Send)."""

    error: RemoteProtocolError


@attrs.frozen
class Close:
    code: int
    reason: str


@attrs.frozen
class LookupLimited:
    """A snapshot look-up (``action``: subscribe, resume, snapshot_request) was refused over the
    connection's rate limit; counted every time, logged when ``first`` of a run."""

    group: str
    action: str
    first: bool


Effect = (
    Send | SubscribeGroup | UnsubscribeGroup | ResumeGroup | RequestSnapshot | PauseGroups
    | LevelChanged | ClientReport | Audit | ProtocolViolation | Close | AuthThrottled
    | AuthLockedOut | LookupLimited
)


class Effects:
    """The effects a session produced since the shell last took them, in order."""

    def __init__(self) -> None:
        self._items: list[Effect] = []

    def add(self, effect: Effect) -> None:
        self._items.append(effect)

    def send(self, frame: ServerFrame) -> None:
        self._items.append(Send(frame))

    def violation(self, err: RemoteProtocolError) -> None:
        """The peer broke a rule: count and log it, and tell it with an ``Error`` frame (a fatal
        one also needs the session to close, which only the session can decide)."""
        self._items.append(ProtocolViolation(err))
        self.send(ServerFrame(error=Error(
            code=err.error_code, message=err.message, ref_id=err.ref_id, group=err.group,
            fatal=err.fatal,
        )))

    def take(self) -> list[Effect]:
        out, self._items = self._items, []
        return out
