"""``POST /admin/drain``: ask this gateway worker to drain (docs/protocol.md "Drain").

Served on the worker's shared port (any worker answers) and on its private port
(``metrics_port + index``: this worker and no other). The bearer token must carry
``drain_role`` (the admin role, checked by the same :class:`~._admin_gate.AdminGate` as the
feature-flag admin); a refusal is 401/403/429 and audited (``XY-GW-044``), an accepted request
202 and audited (``XY-GW-043``). What follows is the SIGTERM drain: not ready, the clients told
to move over ``drain_s``, then the worker exits and its supervisor starts a fresh copy.
"""

from __future__ import annotations

from collections.abc import Callable

from xypipe._errors import GW_DRAIN_REFUSED, GW_DRAIN_REQUESTED
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._admin_gate import AdminGate
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._http import Request, Response

__all__ = ["DRAIN_PATH", "DrainRoute"]

DRAIN_PATH = "/admin/drain"


class DrainRoute:
    def __init__(self, *, role: str, verifier: TokenVerifier, access: AccessRecorder,
                 metrics: GatewayMetrics, request_drain: Callable[[str], bool],
                 drain_s: float, wall: Callable[[], float]) -> None:
        self.metrics = metrics
        self.audit = access.audit
        self.request_drain = request_drain
        self.drain_s = drain_s
        self.gate = AdminGate(
            role=role, verifier=verifier, access=access, wall=wall,
            refused=lambda outcome: metrics.drain_requests.labels(outcome).inc(),
            action="admin.drain", unauthenticated_code=GW_DRAIN_REFUSED,
            forbidden_code=GW_DRAIN_REFUSED)
        for outcome in ("allowed", "already", "unauthenticated", "forbidden"):
            metrics.drain_requests.labels(outcome)

    async def __call__(self, req: Request) -> Response:
        principal = self.gate.principal(req)
        if isinstance(principal, Response):
            return principal
        if not self.request_drain(f"admin {principal.subject}"):
            self.metrics.drain_requests.labels("already").inc()
            return Response.json({"draining": True, "error": "already draining"}, 409)
        self.metrics.drain_requests.labels("allowed").inc()
        self.audit.record("gateway drain requested", code=GW_DRAIN_REQUESTED,
                          action="admin.drain", outcome="allowed", sub=principal.subject,
                          peer=req.peer)
        return Response.json({"draining": True, "drain_s": self.drain_s}, 202)
