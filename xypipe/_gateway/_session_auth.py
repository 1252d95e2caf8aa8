"""Who a browser session is: the ``Hello`` and ``RefreshToken`` checks (sans-I/O).

A hello is refused unchecked while its address is locked out (``AuthThrottle``), then checked
for the protocol version and the token (signature, issuer, audience, lifetime); every outcome
is audited, and failures count against the address. A refresh must carry a valid token for the
same subject. The :class:`~xypipe._gateway._session.Session` moves its state and closes on what
this part answers.
"""

from __future__ import annotations

import math

import attrs

from xypipe._audit import claimed_subject
from xypipe._errors import AuthError
from xypipe._gateway._auth import AuthExpired, Principal, TokenVerifier
from xypipe._gateway._session_effects import (
    Audit,
    AuthLockedOut,
    AuthThrottled,
    Effects,
    RemoteProtocolError,
)
from xypipe._gateway._session_policy import SessionPolicy
from xypipe._gateway._throttle import AuthThrottle
from xypipe.contracts import ClientFrame, Error, ErrorCode, ServerFrame, Welcome


@attrs.frozen
class Throttled:
    """A hello refused before its token was looked at (the ``Error`` frame is already out)."""

    error_code: ErrorCode
    message: str


class SessionAuth:
    """Checks one session's hello and refreshes; effects go to ``out``."""

    def __init__(self, verifier: TokenVerifier, policy: SessionPolicy, out: Effects, *,
                 throttle: AuthThrottle | None, address: str, peer: str) -> None:
        self.verifier = verifier
        self.policy = policy
        self.out = out
        #: Failed hellos are counted per client ``address`` in the gateway-wide ``throttle``.
        self.throttle = throttle
        self.address = address
        self.peer = peer

    def deadline(self, now: float, wall: float, principal: Principal) -> float:
        """When (monotonic) the principal's token runs out, leeway included."""
        return now + (principal.expires_at + self.verifier.leeway_s - wall)

    def welcome(self, session_id: str, wall: float, principal: Principal) -> ServerFrame:
        p = self.policy
        return ServerFrame(welcome=Welcome(
            session_id=session_id, protocol_version=p.protocol_version,
            server_time_us=int(wall * 1e6), heartbeat_ms=p.heartbeat_ms,
            token_expires_us=int(principal.expires_at * 1e6), principal=principal.subject,
            allowed=list(principal.acl.patterns),
        ))

    def hello(self, now: float, wall: float,
              frame: ClientFrame) -> Principal | RemoteProtocolError | Throttled:
        """The first frame: the principal it authenticates (audited), or why not."""
        if not frame.HasField("hello"):
            parts = [f.name for f, _ in frame.ListFields() if f.name != "id"]
            return RemoteProtocolError(
                f"expected a Hello as the first frame, got {', '.join(parts) or 'an empty frame'}",
                ErrorCode.ERROR_CODE_AUTH_REQUIRED, ref_id=frame.id, fatal=True,
            )
        hello = frame.hello
        if self.throttle is not None:
            verdict = self.throttle.check(self.address, now)
            if not verdict.allowed:
                # Refused before the signature is checked: a locked-out address costs little.
                # Counted by the effect; not a ProtocolViolation, which logs every attempt.
                self.out.add(AuthThrottled(self.address, verdict.retry_after_s))
                why = (f"authentication throttled: too many failed attempts from "
                       f"{self.address}; retry in {math.ceil(verdict.retry_after_s)} s")
                code = ErrorCode.ERROR_CODE_RATE_LIMITED
                self.out.send(ServerFrame(error=Error(code=code, message=why, ref_id=frame.id,
                                                      fatal=True)))
                return Throttled(code, why)
        if hello.protocol_version not in (0, self.policy.protocol_version):
            return RemoteProtocolError(
                f"protocol version {hello.protocol_version} not supported; this gateway speaks "
                f"{self.policy.protocol_version}",
                ErrorCode.ERROR_CODE_PROTOCOL_VERSION, ref_id=frame.id, fatal=True,
            )
        try:
            principal = self.verifier.verify(hello.token, wall)
        except AuthError as exc:
            expired = isinstance(exc, AuthExpired)
            self.out.add(Audit("auth", "denied", {
                "reason": exc.message, "error_code": exc.code, "peer": self.peer,
                "client": hello.client, "claimed_sub": claimed_subject(hello.token),
            }))
            if self.throttle is not None:
                lockout = self.throttle.failure(self.address, now,
                                                "expired" if expired else "invalid")
                if lockout is not None:
                    self.out.add(AuthLockedOut(lockout))
            return RemoteProtocolError(
                exc.message,
                ErrorCode.ERROR_CODE_AUTH_EXPIRED if expired else ErrorCode.ERROR_CODE_AUTH_INVALID,
                ref_id=frame.id, fatal=True,
            )
        if self.throttle is not None:
            self.throttle.success(self.address, now)
        self.out.add(Audit("auth", "allowed", {
            "principal": principal.subject, "peer": self.peer, "client": hello.client,
            "resumed_from": hello.session_id, "token_id": principal.token_id,
        }))
        return principal

    def refresh(self, wall: float, token: str, ref: int,
                current: Principal) -> Principal | RemoteProtocolError:
        """A new token for ``current``'s subject (audited), or why it is refused (fatal when
        it names another subject; otherwise the current token stays in force)."""
        try:
            principal = self.verifier.verify(token, wall)
        except AuthError as exc:
            self.out.add(Audit("refresh", "denied", {
                "principal": current.subject, "reason": exc.message, "error_code": exc.code,
            }))
            return RemoteProtocolError(
                f"refresh refused: {exc.message}; the current token stays in force",
                ErrorCode.ERROR_CODE_AUTH_INVALID, ref_id=ref, fatal=False)
        if principal.subject != current.subject:
            self.out.add(Audit("refresh", "denied", {
                "principal": current.subject, "reason": "token for another subject",
                "presented_subject": principal.subject,
            }))
            return RemoteProtocolError(
                f"refresh refused: token is for {principal.subject!r}, this session belongs to "
                f"{current.subject!r}", ErrorCode.ERROR_CODE_AUTH_INVALID, ref_id=ref,
                fatal=True,
            )
        self.out.add(Audit("refresh", "allowed", {
            "principal": principal.subject, "token_id": principal.token_id,
            "expires_at": principal.expires_at,
        }))
        return principal
