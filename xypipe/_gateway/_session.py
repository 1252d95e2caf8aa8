"""The sans-I/O core of one browser connection.

A :class:`Session` is fed events — a client frame arrived, the clock moved, the send queue's
pressure was sampled, an operator flag changed — each with ``now`` (monotonic seconds) and, where
tokens are involved, ``wall`` (seconds since the epoch). It answers with *effects* the connection
task carries out (send this frame, subscribe the hub to that group, close with this code, write
this audit line). It owns no socket, no task and no clock, so every rule of the browser protocol
is unit-tested by feeding it events.

States and the only transitions allowed (``TRANSITIONS``)::

    AUTH ──hello ok──► SUBSCRIBED ◄──level back to L0── DEGRADED
      │                   │  └──────level up (L1..L3)──────►│
      └──fatal───────► CLOSING ◄──────fatal─────────────────┘
                          └──closed──► CLOSED          (peer gone: any state ──► CLOSED)

A peer that breaks the protocol gets an ``Error`` frame (fatal ones close with
``4000 + ErrorCode``); the core itself being driven wrongly (an event the table does not allow)
raises :class:`LocalProtocolError`, which is a bug in the gateway, not the peer's fault.
"""

from __future__ import annotations

import enum
import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, cast

import attrs

from xypipe._contracts import ContractDecoder
from xypipe._degrade import DegradationController, DegradePolicy, Level, Pressure, Transition
from xypipe._errors import GW_UNKNOWN_GROUP, AuthError, ContractError, ProtocolError
from xypipe._gateway._audit import ANONYMOUS, claimed_subject
from xypipe._gateway._auth import AuthExpired, Principal, TokenVerifier
from xypipe._gateway._throttle import AuthThrottle, Lockout
from xypipe._levels import LevelPolicy
from xypipe._validate import GROUP_MAX, group_problem
from xypipe.contracts import (
    ClientFrame,
    ClientMetrics,
    DegradeChange,
    Error,
    ErrorCode,
    GroupRef,
    Pong,
    Priority,
    ResumePoint,
    ServerFrame,
    Subscribed,
    Welcome,
)

PROTOCOL_VERSION = 1

#: WebSocket close codes: ``4000 + ErrorCode`` for protocol errors, plus the standard ones.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_BASE = 4000

def close_code(code: int) -> int:
    """The WebSocket close code for a fatal :class:`ErrorCode`."""
    return CLOSE_BASE + int(code)


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (its frame, its timing)."""

    code: ClassVar[str] = "XY-PROTO-002"

    def __init__(self, message: str, error_code: int, *, fatal: bool, ref_id: int = 0,
                 group: str = "") -> None:
        super().__init__(message, remote=True)
        self.error_code = error_code
        self.fatal = fatal
        self.ref_id = ref_id
        self.group = group


class UnknownGroupError(RemoteProtocolError):
    """A well-formed group the aggregator does not publish (not in the known-groups list)."""

    code: ClassVar[str] = GW_UNKNOWN_GROUP


class LocalProtocolError(ProtocolError):
    """The gateway drove the session core in a way its transition table forbids (our bug)."""

    code: ClassVar[str] = "XY-PROTO-003"

    def __init__(self, message: str) -> None:
        super().__init__(message, remote=False)


class State(enum.Enum):
    AUTH = "auth"
    SUBSCRIBED = "subscribed"
    DEGRADED = "degraded"
    CLOSING = "closing"
    CLOSED = "closed"


class Ev(enum.Enum):
    HELLO_OK = "hello_ok"
    FATAL = "fatal"
    LEVEL_UP = "level_up"
    LEVEL_NORMAL = "level_normal"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[State, Ev], State] = {
    (State.AUTH, Ev.HELLO_OK): State.SUBSCRIBED,
    (State.AUTH, Ev.FATAL): State.CLOSING,
    (State.AUTH, Ev.CLOSED): State.CLOSED,
    (State.SUBSCRIBED, Ev.LEVEL_UP): State.DEGRADED,
    (State.SUBSCRIBED, Ev.FATAL): State.CLOSING,
    (State.SUBSCRIBED, Ev.CLOSED): State.CLOSED,
    (State.DEGRADED, Ev.LEVEL_UP): State.DEGRADED,
    (State.DEGRADED, Ev.LEVEL_NORMAL): State.SUBSCRIBED,
    (State.DEGRADED, Ev.FATAL): State.CLOSING,
    (State.DEGRADED, Ev.CLOSED): State.CLOSED,
    (State.CLOSING, Ev.CLOSED): State.CLOSED,
}


# --------------------------------------------------------------------------- effects


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


@attrs.define
class KnownGroups:
    """The groups the aggregator publishes, as the gateway last read them from its KV bucket;
    one instance shared by every session. ``groups is None``: not loaded yet (or no bucket
    configured); empty: no aggregator has listed a group yet (a gateway up before the
    aggregator's first delta). In both cases every well-formed group is accepted, as a
    subscription served once the group appears (docs/protocol.md, "Groups")."""

    groups: frozenset[str] | None = None

    def knows(self, group: str) -> bool:
        return not self.groups or group in self.groups

    def like(self, group: str) -> str | None:
        """A published group equal to ``group`` but for case (the usual mistake)."""
        folded = group.casefold()
        for g in sorted(self.groups or ()):
            if g.casefold() == folded:
                return g
        return None


Effect = (
    Send | SubscribeGroup | UnsubscribeGroup | ResumeGroup | RequestSnapshot | PauseGroups
    | LevelChanged | ClientReport | Audit | ProtocolViolation | Close | AuthThrottled
    | AuthLockedOut | LookupLimited
)


# --------------------------------------------------------------------------- policy


@attrs.frozen
class SessionPolicy:
    """Per-connection limits and timings (from the gateway stage's config)."""

    hello_timeout_s: float = 5.0
    heartbeat_ms: int = 5000
    heartbeat_timeout_ms: int = 15000
    max_frame_bytes: int = 64 * 1024
    #: Client frames per second (token bucket) and burst.
    rate_per_s: float = 50.0
    burst: int = 100
    #: Bad frames tolerated over a session before it is closed.
    max_bad_frames: int = 10
    max_groups: int = 64
    degrade: DegradePolicy = attrs.field(factory=lambda: DegradePolicy(dwell_ms=2000))
    #: What each level does (paused priorities, whether an overloaded connection may close).
    levels: LevelPolicy = attrs.field(factory=LevelPolicy)
    #: At a level that may close, a pressure at or above this for ``close_after_ms`` closes
    #: the connection.
    close_pressure: float = 1.0
    close_after_ms: int = 5000
    #: Groups that keep flowing at L3 (fnmatch patterns): high priority; the others low.
    priority_groups: tuple[str, ...] = ()
    protocol_version: int = PROTOCOL_VERSION
    #: Snapshot look-ups a connection may cause (subscribe, resume, snapshot request: one per
    #: group), a token bucket: ``snapshot_lookup_burst`` at once, then this many a second.
    snapshot_lookups_per_s: float = 4.0
    snapshot_lookup_burst: int = 64

    def is_priority(self, group: str) -> bool:
        return any(fnmatch.fnmatchcase(group, p) for p in self.priority_groups)

    def priority_of(self, group: str) -> int:
        """A gateway knows no contract priorities: ``priority_groups`` are high, others low."""
        return Priority.PRIORITY_HIGH if self.is_priority(group) else Priority.PRIORITY_LOW


# --------------------------------------------------------------------------- the core


class Session:
    """One connection's protocol state. See the module docstring."""

    def __init__(
        self,
        session_id: str,
        verifier: TokenVerifier,
        policy: SessionPolicy,
        now: float,
        *,
        peer: str = "",
        decoder: ContractDecoder | None = None,
        throttle: AuthThrottle | None = None,
        address: str = "",
        known: KnownGroups | None = None,
    ) -> None:
        #: Decodes client frames and counts the unknown fields a newer client sends.
        self.decoder = decoder or ContractDecoder()
        self.session_id = session_id
        self.verifier = verifier
        self.policy = policy
        self.peer = peer
        #: Failed hellos are counted per client ``address`` in the gateway-wide ``throttle``.
        self.throttle = throttle
        self.address = address or peer
        #: Groups the aggregator publishes (shared, updated by the gateway's KV watch).
        self.known = known if known is not None else KnownGroups()
        self.state = State.AUTH
        self.principal: Principal | None = None
        #: group -> shards (empty = every shard), as accepted.
        self.groups: dict[str, frozenset[int]] = {}
        self.controller = DegradationController(policy.degrade)
        self.disabled: frozenset[str] = frozenset()
        self.paused: frozenset[str] = frozenset()
        self.resumed_from = ""
        self._effects: list[Effect] = []
        self._hello_deadline = now + policy.hello_timeout_s
        self._last_seen = now
        self._token_deadline = float("inf")
        self._tokens = float(policy.burst)
        self._bucket_at = now
        self._limited_run = 0
        self._bad_frames = 0
        self._overload_since: float | None = None
        self._lookups = float(policy.snapshot_lookup_burst)
        self._lookups_at = now
        self._lookup_limited_run = 0
        self._now = now

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        return self.controller.level

    @property
    def is_open(self) -> bool:
        return self.state in (State.SUBSCRIBED, State.DEGRADED)

    def take_effects(self) -> list[Effect]:
        out, self._effects = self._effects, []
        return out

    def _go(self, ev: Ev) -> None:
        nxt = TRANSITIONS.get((self.state, ev))
        if nxt is None:
            raise LocalProtocolError(
                f"session {self.session_id}: event {ev.value!r} is not allowed in state "
                f"{self.state.value!r}"
            )
        self.state = nxt

    def _who(self) -> str:
        return self.principal.subject if self.principal is not None else ANONYMOUS

    def _send(self, frame: ServerFrame) -> None:
        self._effects.append(Send(frame))

    def _error(self, err: RemoteProtocolError) -> None:
        self._effects.append(ProtocolViolation(err))
        self._send(ServerFrame(error=Error(
            code=cast(Any, err.error_code), message=err.message, ref_id=err.ref_id,
            group=err.group,
            fatal=err.fatal,
        )))
        if err.fatal:
            self._close(close_code(err.error_code), err.message)

    def _close(self, code: int, reason: str) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self._go(Ev.FATAL)
        # Close reasons are limited to 123 bytes by RFC 6455.
        self._effects.append(Close(code, reason.encode()[:120].decode(errors="ignore")))

    def _bad(self, message: str, code: int = ErrorCode.ERROR_CODE_BAD_FRAME, *, ref_id: int = 0,
             group: str = "", fatal: bool = False) -> None:
        if code in (ErrorCode.ERROR_CODE_BAD_FRAME, ErrorCode.ERROR_CODE_FRAME_TOO_LARGE):
            self._bad_frames += 1
            if self._bad_frames > self.policy.max_bad_frames and not fatal:
                message = (f"{message} (more than {self.policy.max_bad_frames} bad frames: "
                           "closing)")
                fatal = True
        self._error(RemoteProtocolError(message, code, fatal=fatal, ref_id=ref_id, group=group))

    # -- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`tick` must be called next (``inf`` when nothing is pending)."""
        if self.state == State.AUTH:
            return self._hello_deadline
        if not self.is_open:
            return float("inf")
        hb = self._last_seen + self.policy.heartbeat_timeout_ms / 1000
        return min(hb, self._token_deadline)

    def tick(self, now: float) -> None:
        if self.state == State.AUTH and now >= self._hello_deadline:
            self._bad(
                f"no valid Hello within {self.policy.hello_timeout_s:g} s of connecting",
                ErrorCode.ERROR_CODE_AUTH_REQUIRED, fatal=True,
            )
            return
        if not self.is_open:
            return
        if now >= self._token_deadline:
            self._effects.append(Audit("session", "expired", {"principal": self._who()}))
            self._bad(
                "token expired and no RefreshToken arrived; reconnect with a new token",
                ErrorCode.ERROR_CODE_AUTH_EXPIRED, fatal=True,
            )
            return
        silent = now - self._last_seen
        if silent >= self.policy.heartbeat_timeout_ms / 1000:
            self._bad(
                f"nothing received for {silent * 1000:.0f} ms (heartbeat timeout "
                f"{self.policy.heartbeat_timeout_ms} ms; send a Ping every "
                f"{self.policy.heartbeat_ms} ms)",
                ErrorCode.ERROR_CODE_HEARTBEAT_TIMEOUT, fatal=True,
            )

    # -- frames from the peer -----------------------------------------------------------------

    def frame_too_large(self, now: float, size: int) -> None:
        """The shell saw a message over ``max_frame_bytes`` (and discarded it)."""
        if not self._admit(now):
            return
        fatal = self.state == State.AUTH
        self._bad(
            f"frame of {size} bytes exceeds the limit of {self.policy.max_frame_bytes} bytes; "
            "it was discarded",
            ErrorCode.ERROR_CODE_FRAME_TOO_LARGE, fatal=fatal,
        )

    def text_frame(self, now: float) -> None:
        if not self._admit(now):
            return
        self._bad("text frame received: the protocol uses binary protobuf ClientFrames only",
                  fatal=self.state == State.AUTH)

    def receive(self, now: float, wall: float, data: bytes) -> None:
        """One complete binary WebSocket message from the peer."""
        self._now = now
        if not self._admit(now):
            return
        if len(data) > self.policy.max_frame_bytes:
            self._admit_refund()
            self.frame_too_large(now, len(data))
            return
        try:
            frame = self.decoder.decode(ClientFrame, data, where="client frame")
        except ContractError as exc:
            self._bad(f"frame of {len(data)} bytes is not a ClientFrame: {exc.__cause__}",
                      fatal=self.state == State.AUTH)
            return
        if self.state == State.AUTH:
            self._on_auth_frame(now, wall, frame)
            return
        self._on_open_frame(now, wall, frame)

    def _admit_refund(self) -> None:
        self._tokens = min(float(self.policy.burst), self._tokens + 1)

    def _admit(self, now: float) -> bool:
        """Liveness and the rate limit; False when the frame must be ignored."""
        if self.state in (State.CLOSING, State.CLOSED):
            return False
        self._last_seen = now
        p = self.policy
        self._tokens = min(float(p.burst), self._tokens + (now - self._bucket_at) * p.rate_per_s)
        self._bucket_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._limited_run = 0
            return True
        self._limited_run += 1
        if self._limited_run == 1:
            self._bad(f"more than {p.rate_per_s:g} frames/s (burst {p.burst}); frame dropped",
                      ErrorCode.ERROR_CODE_RATE_LIMITED)
        elif self._limited_run > p.burst:
            self._bad(f"{self._limited_run} frames in a row over the rate limit; closing",
                      ErrorCode.ERROR_CODE_RATE_LIMITED, fatal=True)
        return False

    def _on_auth_frame(self, now: float, wall: float, frame: ClientFrame) -> None:
        if not frame.HasField("hello"):
            parts = [f.name for f, _ in frame.ListFields() if f.name != "id"]
            self._bad(
                f"expected a Hello as the first frame, got {', '.join(parts) or 'an empty frame'}",
                ErrorCode.ERROR_CODE_AUTH_REQUIRED, ref_id=frame.id, fatal=True,
            )
            return
        hello = frame.hello
        if self.throttle is not None:
            verdict = self.throttle.check(self.address, now)
            if not verdict.allowed:
                # Refused before the signature is checked: a locked-out address costs little.
                # Counted by the effect; not a ProtocolViolation, which logs every attempt.
                self._effects.append(AuthThrottled(self.address, verdict.retry_after_s))
                why = (f"authentication throttled: too many failed attempts from "
                       f"{self.address}; retry in {math.ceil(verdict.retry_after_s)} s")
                code = ErrorCode.ERROR_CODE_RATE_LIMITED
                self._send(ServerFrame(error=Error(code=code, message=why, ref_id=frame.id,
                                                   fatal=True)))
                self._close(close_code(code), why)
                return
        if hello.protocol_version not in (0, self.policy.protocol_version):
            self._bad(
                f"protocol version {hello.protocol_version} not supported; this gateway speaks "
                f"{self.policy.protocol_version}",
                ErrorCode.ERROR_CODE_PROTOCOL_VERSION, ref_id=frame.id, fatal=True,
            )
            return
        try:
            principal = self.verifier.verify(hello.token, wall)
        except AuthError as exc:
            expired = isinstance(exc, AuthExpired)
            self._effects.append(Audit("auth", "denied", {
                "reason": exc.message, "error_code": exc.code, "peer": self.peer,
                "client": hello.client, "claimed_sub": claimed_subject(hello.token),
            }))
            if self.throttle is not None:
                lockout = self.throttle.failure(self.address, now,
                                                "expired" if expired else "invalid")
                if lockout is not None:
                    self._effects.append(AuthLockedOut(lockout))
            self._bad(
                exc.message,
                ErrorCode.ERROR_CODE_AUTH_EXPIRED if expired else ErrorCode.ERROR_CODE_AUTH_INVALID,
                ref_id=frame.id, fatal=True,
            )
            return
        if self.throttle is not None:
            self.throttle.success(self.address, now)
        self.principal = principal
        self.resumed_from = hello.session_id
        self._token_deadline = now + (principal.expires_at + self.verifier.leeway_s - wall)
        self._go(Ev.HELLO_OK)
        self._effects.append(Audit("auth", "allowed", {
            "principal": principal.subject, "peer": self.peer, "client": hello.client,
            "resumed_from": hello.session_id, "token_id": principal.token_id,
        }))
        self._send(ServerFrame(welcome=Welcome(
            session_id=self.session_id, protocol_version=self.policy.protocol_version,
            server_time_us=int(wall * 1e6), heartbeat_ms=self.policy.heartbeat_ms,
            token_expires_us=int(principal.expires_at * 1e6), principal=principal.subject,
            allowed=list(principal.acl.patterns),
        )))
        # Anything else the first frame carries is handled as in an open session.
        rest = ClientFrame()
        rest.CopyFrom(frame)
        rest.ClearField("hello")
        if rest.ListFields() and [f.name for f, _ in rest.ListFields()] != ["id"]:
            self._on_open_frame(now, wall, rest)

    def _on_open_frame(self, now: float, wall: float, frame: ClientFrame) -> None:
        ref = frame.id
        handled = False
        if frame.HasField("hello"):
            handled = True
            self._bad("already authenticated; send RefreshToken to replace the token",
                      ref_id=ref)
        if frame.HasField("refresh"):
            handled = True
            self._on_refresh(now, wall, frame.refresh.token, ref)
            if not self.is_open:
                return
        if frame.HasField("unsubscribe"):
            handled = True
            self._on_unsubscribe(frame.unsubscribe.groups, ref)
        if frame.HasField("subscribe"):
            handled = True
            self._on_subscribe(frame.subscribe.groups, ref)
        if frame.HasField("resume"):
            handled = True
            self._on_resume(frame.resume.points, ref)
        if frame.HasField("snapshot_request"):
            handled = True
            group = frame.snapshot_request.group
            if group not in self.groups:
                self._bad(f"snapshot request for {group!r}, which this connection has not "
                          "subscribed", ErrorCode.ERROR_CODE_UNKNOWN_GROUP, ref_id=ref, group=group)
            elif self._lookup(group, "snapshot_request", ref):
                self._effects.append(RequestSnapshot(group, ref))
        if frame.HasField("ping"):
            handled = True
            self._send(ServerFrame(pong=Pong(
                ts_us=frame.ping.ts_us, nonce=frame.ping.nonce, server_time_us=int(wall * 1e6),
            )))
        if frame.HasField("metrics"):
            handled = True
            self._effects.append(ClientReport(frame.metrics))
        if not handled:
            self._bad("frame carries no known field (expected one of subscribe, unsubscribe, "
                      "resume, ping, refresh, snapshot_request, metrics)", ref_id=ref)

    # -- auth refresh -------------------------------------------------------------------------

    def _on_refresh(self, now: float, wall: float, token: str, ref: int) -> None:
        assert self.principal is not None
        try:
            principal = self.verifier.verify(token, wall)
        except AuthError as exc:
            self._effects.append(Audit("refresh", "denied", {
                "principal": self._who(), "reason": exc.message, "error_code": exc.code,
            }))
            self._bad(f"refresh refused: {exc.message}; the current token stays in force",
                      ErrorCode.ERROR_CODE_AUTH_INVALID, ref_id=ref)
            return
        if principal.subject != self.principal.subject:
            self._effects.append(Audit("refresh", "denied", {
                "principal": self._who(), "reason": "token for another subject",
                "presented_subject": principal.subject,
            }))
            self._bad(
                f"refresh refused: token is for {principal.subject!r}, this session belongs to "
                f"{self.principal.subject!r}", ErrorCode.ERROR_CODE_AUTH_INVALID, ref_id=ref,
                fatal=True,
            )
            return
        self.principal = principal
        self._token_deadline = now + (principal.expires_at + self.verifier.leeway_s - wall)
        self._effects.append(Audit("refresh", "allowed", {
            "principal": principal.subject, "token_id": principal.token_id,
            "expires_at": principal.expires_at,
        }))
        # The new token may grant less: drop what it no longer covers, loudly.
        for group, shards in list(self.groups.items()):
            decision = principal.acl.check_group(group, shards)
            if not decision.allowed:
                self._deny(group, decision.denied_subject, ref, "refresh")
                del self.groups[group]
                self._effects.append(UnsubscribeGroup(group))
        self._update_paused()
        self._send(ServerFrame(welcome=Welcome(
            session_id=self.session_id, protocol_version=self.policy.protocol_version,
            server_time_us=int(wall * 1e6), heartbeat_ms=self.policy.heartbeat_ms,
            token_expires_us=int(principal.expires_at * 1e6), principal=principal.subject,
            allowed=list(principal.acl.patterns),
        )))

    # -- subscriptions -------------------------------------------------------------------------

    def _deny(self, group: str, subject: str, ref: int, action: str) -> None:
        self._effects.append(Audit(action, "denied", {
            "principal": self._who(), "group": group, "subject": subject,
        }))
        self._bad(
            f"not allowed to subscribe to {subject!r} (group {group!r}): the token's patterns "
            "do not cover it", ErrorCode.ERROR_CODE_ACL_DENIED, ref_id=ref, group=group,
        )

    def _check_group(self, group: str, shards: Iterable[int], ref: int, action: str) -> bool:
        assert self.principal is not None
        problem = group_problem(group)
        if problem is not None:
            self._bad(f"group name {group!r}: expected 1-{GROUP_MAX} characters of "
                      f"A-Z a-z 0-9 _ -; {problem}",
                      ErrorCode.ERROR_CODE_UNKNOWN_GROUP, ref_id=ref, group=group)
            return False
        if group not in self.groups and len(self.groups) >= self.policy.max_groups:
            self._bad(f"subscription limit of {self.policy.max_groups} groups reached",
                      ErrorCode.ERROR_CODE_RATE_LIMITED, ref_id=ref, group=group)
            return False
        decision = self.principal.acl.check_group(group, shards)
        if not decision.allowed:
            self._deny(group, decision.denied_subject, ref, action)
            return False
        if not self.known.knows(group):
            like = self.known.like(group)
            hint = f"; did you mean {like!r}? group names are case-sensitive" if like else ""
            self._error(UnknownGroupError(
                f"group {group!r} is not published by the aggregator{hint}",
                ErrorCode.ERROR_CODE_UNKNOWN_GROUP, fatal=False, ref_id=ref, group=group))
            return False
        return self._lookup(group, action, ref)

    def _lookup(self, group: str, action: str, ref: int) -> bool:
        """Take one snapshot look-up from the connection's bucket; refuse (clear error,
        counted) when it is empty. Nothing is subscribed or requested for a refused one."""
        p = self.policy
        now = self._now
        self._lookups = min(float(p.snapshot_lookup_burst),
                            self._lookups + (now - self._lookups_at) * p.snapshot_lookups_per_s)
        self._lookups_at = now
        if self._lookups >= 1.0:
            self._lookups -= 1.0
            self._lookup_limited_run = 0
            return True
        self._lookup_limited_run += 1
        self._effects.append(LookupLimited(group, action, self._lookup_limited_run == 1))
        self._send(ServerFrame(error=Error(
            code=ErrorCode.ERROR_CODE_RATE_LIMITED, ref_id=ref, group=group, fatal=False,
            message=(f"{action} of {group!r} refused: more than {p.snapshot_lookups_per_s:g} "
                     f"snapshot look-ups/s (burst {p.snapshot_lookup_burst}) on this "
                     "connection; retry later"),
        )))
        return False

    def _on_subscribe(self, refs: Sequence[GroupRef], ref: int) -> None:
        done: list[GroupRef] = []
        for g in refs:
            shards = frozenset(g.shards)
            if not self._check_group(g.group, shards, ref, "subscribe"):
                continue
            self._effects.append(Audit("subscribe", "allowed", {
                "principal": self._who(), "group": g.group, "shards": sorted(shards),
            }))
            self.groups[g.group] = shards
            self._effects.append(SubscribeGroup(g.group, shards, ref))
            done.append(GroupRef(group=g.group, shards=sorted(shards)))
        if done:
            self._send(ServerFrame(subscribed=Subscribed(groups=done)))
        if self._update_paused():
            self._announce_paused()

    def _on_unsubscribe(self, refs: Sequence[GroupRef], ref: int) -> None:
        for g in refs:
            if g.group in self.groups:
                del self.groups[g.group]
                self._effects.append(UnsubscribeGroup(g.group))
        self._update_paused()

    def _on_resume(self, points: Sequence[ResumePoint], ref: int) -> None:
        by_group: dict[str, list[ResumePoint]] = {}
        for p in points:
            by_group.setdefault(p.group, []).append(p)
        done: list[GroupRef] = []
        for group, pts in by_group.items():
            if not self._check_group(group, (), ref, "resume"):
                continue
            self._effects.append(Audit("resume", "allowed", {
                "principal": self._who(), "group": group,
                "points": [[p.shard, p.epoch, p.seq] for p in pts],
            }))
            self.groups[group] = frozenset()
            self._effects.append(ResumeGroup(group, tuple(pts), ref))
            done.append(GroupRef(group=group))
        if done:
            self._send(ServerFrame(subscribed=Subscribed(groups=done)))
        if self._update_paused():
            self._announce_paused()

    # -- degradation --------------------------------------------------------------------------

    def _update_paused(self) -> bool:
        """Recompute the paused groups; True when the set changed."""
        paused = {g for g in self.groups if g in self.disabled}
        reaction = self.policy.levels.at(self.level)
        if reaction.paused_priorities:
            paused |= {g for g in self.groups if reaction.pauses(self.policy.priority_of(g))}
        new = frozenset(paused)
        if new == self.paused:
            return False
        self.paused = new
        self._effects.append(PauseGroups(new))
        return True

    def pressure(self, now: float, pressure: Pressure) -> None:
        """A sample of this connection's send-queue pressure (1.0 = budget full)."""
        if not self.is_open:
            return
        self._apply(self.controller.update(now, pressure))
        if (self.policy.levels.at(self.level).may_close
                and pressure.value >= self.policy.close_pressure):
            if self._overload_since is None:
                self._overload_since = now
            elif now - self._overload_since >= self.policy.close_after_ms / 1000:
                self._bad(
                    f"slow consumer: send queue still at {pressure.value:.2f} of its budget "
                    f"after {self.policy.close_after_ms} ms at L{int(self.level)} "
                    f"({pressure.source})",
                    ErrorCode.ERROR_CODE_SLOW_CONSUMER, fatal=True,
                )
        else:
            self._overload_since = None

    def force_level(self, now: float, level: Level | None) -> None:
        """Operator override (feature flag); ``None`` returns control to the pressure."""
        if not self.is_open:
            return
        if level is None and self.controller.forced is None:
            return
        if level is not None and self.controller.forced == level:
            return
        # Cleared: the level comes down by the usual rule (pressure below the leave threshold
        # for the dwell time), so a still-slow connection does not bounce to L0 and back.
        self._apply(self.controller.force(now, level))

    def set_disabled_groups(self, groups: frozenset[str]) -> None:
        self.disabled = groups
        if self.is_open and self._update_paused():
            self._announce_paused()

    def _announce_paused(self) -> None:
        """Tell the client which of its groups are paused now (the level did not change)."""
        disabled = sorted(self.disabled & set(self.groups))
        if disabled:
            reason = "groups disabled by operator: " + ", ".join(disabled)
        elif self.paused:
            reason = f"L{int(self.level)}: low-priority groups paused"
        else:
            reason = "no group paused"
        self._send(ServerFrame(degrade=DegradeChange(
            level=int(self.level), reason=reason,
            recovery=self.controller.recovery_condition(), paused_groups=sorted(self.paused),
        )))

    def _apply(self, t: Transition | None) -> None:
        if t is None:
            return
        self._go(Ev.LEVEL_UP if t.new > Level.L0 else Ev.LEVEL_NORMAL)
        self._effects.append(LevelChanged(t))
        self._update_paused()
        self._send(ServerFrame(degrade=DegradeChange(
            level=int(t.new), reason=t.reason, recovery=t.recovery,
            paused_groups=sorted(self.paused),
        )))

    # -- end ----------------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """The gateway closes this session (shutdown, operator)."""
        self._close(code, reason)

    def closed(self) -> None:
        """The socket is gone (either side)."""
        if self.state != State.CLOSED:
            self._go(Ev.CLOSED)
