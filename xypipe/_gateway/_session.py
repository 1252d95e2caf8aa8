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

The session owns the state, the frame dispatch, liveness and the frame rate limit; it delegates
to socket-free parts that add their effects to the same buffer (:mod:`._session_effects`):
who the peer is (:mod:`._session_auth`), which groups it holds (:mod:`._session_groups`), and
its degradation level and paused groups (:mod:`._connlevel`). Limits live in
:mod:`._session_policy`; effects, close codes and policy are importable from here too.
"""
from __future__ import annotations

import enum
from typing import ClassVar

from xypipe._audit import ANONYMOUS
from xypipe._contracts import ContractDecoder
from xypipe._degrade import DegradationController, Level, Pressure, Transition
from xypipe._errors import PROTO_LOCAL_ERROR, ContractError, ProtocolError
from xypipe._gateway._auth import Principal, TokenVerifier
from xypipe._gateway._bucket import TokenBucket
from xypipe._gateway._connlevel import ConnectionLevel
from xypipe._gateway._session_auth import SessionAuth, Throttled
from xypipe._gateway._session_effects import (
    CLOSE_BASE,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    Audit,
    AuthLockedOut,
    AuthThrottled,
    ClientReport,
    Close,
    Effect,
    Effects,
    LevelChanged,
    LookupLimited,
    PauseGroups,
    ProtocolViolation,
    RemoteProtocolError,
    RequestSnapshot,
    ResumeGroup,
    Send,
    SubscribeGroup,
    UnknownGroupError,
    UnsubscribeGroup,
    close_code,
)
from xypipe._gateway._session_groups import SessionGroups
from xypipe._gateway._session_policy import PROTOCOL_VERSION, KnownGroups, SessionPolicy
from xypipe._gateway._throttle import AuthThrottle
from xypipe.contracts import ClientFrame, ErrorCode, Pong, ServerFrame


class LocalProtocolError(ProtocolError):
    """The gateway drove the session core in a way its transition table forbids (our bug)."""

    code: ClassVar[str] = PROTO_LOCAL_ERROR

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
        self.state = State.AUTH
        self.principal: Principal | None = None
        self.resumed_from = ""
        self._out = Effects()
        #: Checks the hello and refreshes (throttle, version, token, subject).
        self._auth = SessionAuth(verifier, policy, self._out, throttle=throttle,
                                 address=self.address, peer=peer)
        #: The groups this session holds (subscribe, resume, refresh) and their rules.
        self._groups = SessionGroups(policy, known if known is not None else KnownGroups(),
                                     self._out, now)
        #: This connection's degradation level and the groups it pauses.
        self._level = ConnectionLevel(policy, self._out)
        self._hello_deadline = now + policy.hello_timeout_s
        self._last_seen = now
        self._token_deadline = float("inf")
        self._frames = TokenBucket(policy.rate_per_s, policy.burst, now)
        self._limited_run = 0
        self._bad_frames = 0

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        return self._level.level

    @property
    def controller(self) -> DegradationController:
        return self._level.controller

    @property
    def groups(self) -> dict[str, frozenset[int]]:
        """group -> shards (empty = every shard), as accepted."""
        return self._groups.groups

    @property
    def known(self) -> KnownGroups:
        """Groups the aggregator publishes (shared, updated by the gateway's KV watch)."""
        return self._groups.known

    @property
    def paused(self) -> frozenset[str]:
        return self._level.paused

    @property
    def disabled(self) -> frozenset[str]:
        return self._level.disabled

    @property
    def is_open(self) -> bool:
        return self.state in (State.SUBSCRIBED, State.DEGRADED)

    def take_effects(self) -> list[Effect]:
        return self._out.take()

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

    def _error(self, err: RemoteProtocolError) -> None:
        self._out.violation(err)
        if err.fatal:
            self._close(close_code(err.error_code), err.message)

    def _close(self, code: int, reason: str) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self._go(Ev.FATAL)
        # Close reasons are limited to 123 bytes by RFC 6455.
        self._out.add(Close(code, reason.encode()[:120].decode(errors="ignore")))

    def _bad(self, message: str, code: ErrorCode = ErrorCode.ERROR_CODE_BAD_FRAME, *,
             ref_id: int = 0, group: str = "", fatal: bool = False) -> None:
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
            self._out.add(Audit("session", "expired", {"principal": self._who()}))
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
        if not self._admit(now):
            return
        if len(data) > self.policy.max_frame_bytes:
            self._frames.refund()
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

    def _admit(self, now: float) -> bool:
        """Liveness and the rate limit; False when the frame must be ignored."""
        if self.state in (State.CLOSING, State.CLOSED):
            return False
        self._last_seen = now
        if self._frames.take(now):
            self._limited_run = 0
            return True
        p = self.policy
        self._limited_run += 1
        if self._limited_run == 1:
            self._bad(f"more than {p.rate_per_s:g} frames/s (burst {p.burst}); frame dropped",
                      ErrorCode.ERROR_CODE_RATE_LIMITED)
        elif self._limited_run > p.burst:
            self._bad(f"{self._limited_run} frames in a row over the rate limit; closing",
                      ErrorCode.ERROR_CODE_RATE_LIMITED, fatal=True)
        return False

    def _on_auth_frame(self, now: float, wall: float, frame: ClientFrame) -> None:
        answer = self._auth.hello(now, wall, frame)
        if isinstance(answer, RemoteProtocolError):
            self._error(answer)
            return
        if isinstance(answer, Throttled):
            self._close(close_code(answer.error_code), answer.message)
            return
        self.principal = answer
        self.resumed_from = frame.hello.session_id
        self._token_deadline = self._auth.deadline(now, wall, answer)
        self._go(Ev.HELLO_OK)
        self._out.send(self._auth.welcome(self.session_id, wall, answer))
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
        assert self.principal is not None
        if frame.HasField("unsubscribe"):
            handled = True
            self._groups.unsubscribe(frame.unsubscribe.groups)
            self._level.repause(self.groups)
        if frame.HasField("subscribe"):
            handled = True
            self._groups.subscribe(self.principal, frame.subscribe.groups, ref, now)
            self._repause_and_announce()
        if frame.HasField("resume"):
            handled = True
            self._groups.resume(self.principal, frame.resume.points, ref, now)
            self._repause_and_announce()
        if frame.HasField("snapshot_request"):
            handled = True
            self._groups.snapshot_request(frame.snapshot_request.group, ref, now)
        if frame.HasField("ping"):
            handled = True
            self._out.send(ServerFrame(pong=Pong(
                ts_us=frame.ping.ts_us, nonce=frame.ping.nonce, server_time_us=int(wall * 1e6),
            )))
        if frame.HasField("metrics"):
            handled = True
            self._out.add(ClientReport(frame.metrics))
        if not handled:
            self._bad("frame carries no known field (expected one of subscribe, unsubscribe, "
                      "resume, ping, refresh, snapshot_request, metrics)", ref_id=ref)

    # -- auth refresh -------------------------------------------------------------------------

    def _on_refresh(self, now: float, wall: float, token: str, ref: int) -> None:
        assert self.principal is not None
        answer = self._auth.refresh(wall, token, ref, self.principal)
        if isinstance(answer, RemoteProtocolError):
            self._error(answer)
            return
        self.principal = answer
        self._token_deadline = self._auth.deadline(now, wall, answer)
        self._groups.revoke(answer, ref)
        self._level.repause(self.groups)
        self._out.send(self._auth.welcome(self.session_id, wall, answer))

    # -- degradation --------------------------------------------------------------------------

    def _repause_and_announce(self) -> None:
        if self._level.repause(self.groups):
            self._level.announce_paused(self.groups)

    def pressure(self, now: float, pressure: Pressure) -> None:
        """A sample of this connection's send-queue pressure (1.0 = budget full)."""
        if not self.is_open:
            return
        t, overloaded = self._level.sample(now, pressure)
        self._apply(t)
        if overloaded is not None:
            self._bad(overloaded, ErrorCode.ERROR_CODE_SLOW_CONSUMER, fatal=True)

    def force_level(self, now: float, level: Level | None) -> None:
        """Operator override (feature flag); ``None`` returns control to the pressure."""
        if self.is_open:
            self._apply(self._level.force(now, level))

    def set_disabled_groups(self, groups: frozenset[str]) -> None:
        self._level.disabled = groups
        if self.is_open:
            self._repause_and_announce()

    def _apply(self, t: Transition | None) -> None:
        if t is None:
            return
        self._go(Ev.LEVEL_UP if t.new > Level.L0 else Ev.LEVEL_NORMAL)
        self._level.changed(t, self.groups)

    def key_removed(self, kids: frozenset[str]) -> bool:
        """The token key set lost ``kids``: a session whose token one of them verified ends at
        once (audited), as an expired one does; the client reconnects with a token signed by a
        key still loaded. True when this session ended."""
        p = self.principal
        if not self.is_open or p is None or p.kid not in kids:
            return False
        self._out.add(Audit("session", "key_removed", {"principal": p.subject, "kid": p.kid}))
        self._bad(f"the key {p.kid!r} that verified this session's token was removed; "
                  "reconnect with a token signed by a current key",
                  ErrorCode.ERROR_CODE_AUTH_EXPIRED, fatal=True)
        return True

    # -- end ----------------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """The gateway closes this session (shutdown, operator)."""
        self._close(code, reason)

    def closed(self) -> None:
        """The socket is gone (either side)."""
        if self.state != State.CLOSED:
            self._go(Ev.CLOSED)


__all__ = [
    "CLOSE_BASE", "CLOSE_GOING_AWAY", "CLOSE_INTERNAL", "CLOSE_NORMAL", "PROTOCOL_VERSION",
    "TRANSITIONS", "Audit", "AuthLockedOut", "AuthThrottled", "ClientReport", "Close", "Effect",
    "Ev", "KnownGroups", "LevelChanged", "LocalProtocolError", "LookupLimited", "PauseGroups",
    "ProtocolViolation", "RemoteProtocolError", "RequestSnapshot", "ResumeGroup", "Send",
    "Session", "SessionPolicy", "State", "SubscribeGroup", "UnknownGroupError",
    "UnsubscribeGroup", "close_code",
]
