"""Who may do what, as the gateway reports it: one place that counts and audits every access
decision — hellos and refreshes, subscriptions refused by the ACL, Origins refused at the
upgrade, addresses throttled and locked out, on both surfaces (``ws`` and ``admin``).

The session core and the admin route decide; this module only turns their decisions into
metrics and audit lines (the line shapes are in :mod:`._audit`).
"""

from __future__ import annotations

from xypipe._audit import AuditLog
from xypipe._errors import (
    ACL_DENIED,
    AUTH_EXPIRED,
    AUTH_KEY_REMOVED,
    AUTH_LOCKOUT,
    AUTH_UNKNOWN_KID,
    WS_ORIGIN_DENIED,
    AuthError,
)
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._session import Audit
from xypipe._gateway._throttle import AuthThrottle, Lockout

__all__ = ["AccessRecorder"]

#: Session actions whose refusal names a group: refused by the subject ACL.
_ACL_ACTIONS = ("subscribe", "resume", "refresh")
#: ``auth_failures_total{reason}`` by the refusal's code; any other refusal is ``invalid``.
_REASONS = {AUTH_EXPIRED: "expired", AUTH_UNKNOWN_KID: "unknown_kid"}


class AccessRecorder:
    def __init__(self, metrics: GatewayMetrics, audit: AuditLog, throttle: AuthThrottle) -> None:
        self.metrics = metrics
        self.audit = audit
        self.throttle = throttle

    def session_audit(self, session_id: str, a: Audit) -> None:
        """An :class:`~._session.Audit` effect of one connection's session."""
        fields: dict[str, object] = dict(a.fields)
        sub = fields.pop("principal", None)
        principal = sub if isinstance(sub, str) else None
        fields["session"] = session_id
        action, outcome = a.action, a.outcome
        if action == "auth":
            self.metrics.auth.labels(outcome).inc()
            if outcome == "denied":
                reason = _REASONS.get(str(a.fields.get("error_code")), "invalid")
                self.metrics.auth_failures.labels("ws", reason).inc()
                self.metrics.auth_throttle_addresses.set(len(self.throttle))
        if outcome == "denied":
            if action in _ACL_ACTIONS and "group" in a.fields:
                self.metrics.acl_denied.labels(action).inc()
                self.audit.record("subscription denied by ACL", action=action, outcome=outcome,
                                  sub=principal, code=ACL_DENIED, details=fields)
            else:
                self.audit.record(f"{action} denied", action=action, outcome=outcome,
                                  sub=principal, code=AuthError.code, details=fields)
        elif outcome == "key_removed":
            self.audit.record("session ended: its signing key was removed", action=action,
                              outcome=outcome, sub=principal, code=AUTH_KEY_REMOVED,
                              details=fields)
        elif outcome == "expired":
            self.audit.record(f"{action} {outcome}", action=action, outcome=outcome,
                              sub=principal, code=AUTH_EXPIRED, details=fields)
        else:
            self.audit.record(f"{action} {outcome}", action=action, outcome=outcome,
                              sub=principal, details=fields)

    def origin_denied(self, origin: str | None, peer: str) -> None:
        self.audit.record("websocket origin denied", code=WS_ORIGIN_DENIED, action="connect",
                          outcome="denied", sub=None, origin=origin, peer=peer)

    def throttled(self, surface: str, address: str) -> None:
        """An attempt refused unchecked (address locked out): counted, not logged one by one."""
        self.metrics.auth_throttled.labels(surface).inc()

    def locked_out(self, surface: str, lock: Lockout) -> None:
        """One audit summary line per address per lockout."""
        self.metrics.auth_lockouts.labels(surface).inc()
        self.audit.record(
            "client address locked out after repeated authentication failures",
            code=AUTH_LOCKOUT, action="auth.throttle", outcome="locked", sub=None,
            surface=surface, address=lock.address, failures=lock.failures,
            window_s=lock.window_s, lockout_s=lock.lockout_s, strike=lock.strike,
            reasons=dict(lock.reasons), refused_during_previous_lockout=lock.refused_before)

    def admin_failed(self, address: str, reason: str, now: float) -> None:
        """An admin request's token was missing or refused: counted toward a lockout."""
        self.metrics.auth_failures.labels("admin", reason).inc()
        lock = self.throttle.failure(address, now, reason)
        self.metrics.auth_throttle_addresses.set(len(self.throttle))
        if lock is not None:
            self.locked_out("admin", lock)
