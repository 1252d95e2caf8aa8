"""One connection's refusals: counted, handed to whoever asked, audited.

Every refusal is one audit line in the shape of the gateway's access decisions
(:mod:`xypipe._audit`) — at most one a second per (reason, operation, subject): a refused
reconnect repeats every ``reconnect_wait`` and a refused publish as often as it is tried; the
lines held back are counted in the next (``suppressed``). Fed the time by the caller, so it
keeps no clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from xypipe._audit import AuditLog
from xypipe._errors import (
    NATS_LIVE_REFUSED,
    NATS_TLS_REFUSED,
    NatsPermissionDenied,
    NatsRefused,
)
from xypipe._log import get_logger
from xypipe._nats._refusal import Refusal

__all__ = ["RefusalLog"]

_audit = AuditLog(get_logger("audit", component="nats"))
#: At most one audit line per (reason, operation, subject) per this many seconds.
REPORT_INTERVAL_S = 1.0


class RefusalLog:
    """The refusals of one connection signed in as ``principal``."""

    def __init__(
        self,
        *,
        principal: str | None,
        on_refusal: Callable[[Refusal], None] | None,
        on_permission_denied: Callable[[str], None] | None,
        explain: Callable[[Refusal], Refusal] | None,
    ) -> None:
        self.principal = principal
        self._on_refusal = on_refusal
        self._on_denied = on_permission_denied
        self._explain = explain
        #: Refusals so far, every reason; and those of a permission.
        self.total = 0
        self.permission_denied = 0
        self._reported: dict[tuple[str, str, str | None], tuple[float, int]] = {}

    def explained(self, refusal: Refusal) -> Refusal:
        """The server says only "Authorization Violation" at connect; whoever holds the
        credentials may know more (an expired JWT, a revoked key)."""
        if refusal.op != "connect" or refusal.reason != "auth" or self._explain is None:
            return refusal
        return self._explain(refusal)

    def message(self, refusal: Refusal, servers: str) -> str:
        """What a refused first connect raises (:class:`NatsRefused`)."""
        who = f"{self.principal!r}" if self.principal else "this client"
        if refusal.reason == "tls":
            return f"connect to {servers}: TLS refused for {who}: {refusal.detail}"
        return (f"connect to {servers}: the server refused to sign in {who}: "
                f"{refusal.detail} (reason: {refusal.reason})")

    def report(self, refusal: Refusal, *, now: float, signed_in: bool, server: str) -> Refusal:
        """Count ``refusal``, hand it on and audit it; ``signed_in``: whether the connection was
        up (a live connection refused) or this was its first sign-in. Returns it explained."""
        refusal = self.explained(refusal)
        self.total += 1
        if refusal.reason == "permission":
            self.permission_denied += 1
            if self._on_denied is not None:
                self._on_denied("subscribe" if refusal.op == "subscribe" else "publish")
        if self._on_refusal is not None:
            self._on_refusal(refusal)
        key = (refusal.reason, refusal.op, refusal.subject)
        last, suppressed = self._reported.get(key, (-REPORT_INTERVAL_S, 0))
        if now - last < REPORT_INTERVAL_S:
            self._reported[key] = (last, suppressed + 1)
            return refusal
        self._reported[key] = (now, 0)
        self._audit(refusal, signed_in=signed_in, server=server, suppressed=suppressed)
        return refusal

    def _audit(self, refusal: Refusal, *, signed_in: bool, server: str,
               suppressed: int) -> None:
        if refusal.reason == "permission":
            code, msg = NatsPermissionDenied.code, "nats refused an operation (permissions)"
        elif refusal.reason == "tls":
            code, msg = NATS_TLS_REFUSED, "nats refused the TLS handshake"
        elif not signed_in:
            code, msg = NatsRefused.code, "nats refused to sign this process in"
        else:
            code, msg = NATS_LIVE_REFUSED, "nats refused this process's credentials"
        fields: dict[str, object] = {"reason": refusal.reason, "detail": refusal.detail,
                                     "server": server, "refused_total": self.total}
        if refusal.subject is not None:
            fields.update(subject=refusal.subject, subject_exact=refusal.exact)
        if refusal.reason == "permission":
            fields["denied_total"] = self.permission_denied
        if suppressed:
            fields["suppressed"] = suppressed  # like ones in the second before this one
        _audit.record(msg, code=code, action=f"nats.{refusal.op}", outcome="denied",
                      sub=self.principal, details=fields)
