"""``/admin/feature-flags``: read and change the gateway's feature flags over HTTP.

Every request carries ``Authorization: Bearer <JWT>`` with the admin role; a client address
that keeps failing is throttled (429) before its token is even looked at. ``GET`` lists the
flags; ``PUT {"name": <flag>, "value": <JSON value>}`` changes one.

A change goes to the store (the flags' JetStream KV bucket) as a write conditional on the
revision this gateway last saw, and fails closed: a conflict is a 409 (read again, retry), an
unreachable store a 503 that also means "never applied later" — the :class:`~._flagwatch.
FlagBoard` remembers the write and reverts it if it lands after all. The board's watch, not
this route, applies and audits what the store accepted. Without a store (no NATS) the change
applies to this gateway only.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
import trio

from xypipe._errors import (
    ADM_FLAG_CHANGED,
    ADM_FLAG_INVALID,
    ADM_FORBIDDEN,
    ADM_STORE_UNAVAILABLE,
    ADM_UNAUTHENTICATED,
    BridgeError,
    KvRevisionConflict,
)
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._admin_gate import AdminGate
from xypipe._gateway._auth import Principal, TokenVerifier
from xypipe._gateway._flags import FlagError, FlagValue, validate
from xypipe._gateway._flagwatch import FlagBoard
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._http import Request, Response

__all__ = ["PATH", "AdminRoute"]

PATH = "/admin/feature-flags"


class AdminRoute:
    def __init__(self, *, role: str, verifier: TokenVerifier, access: AccessRecorder,
                 metrics: GatewayMetrics, flags: FlagBoard,
                 wall: Callable[[], float]) -> None:
        self.role = role
        self.verifier = verifier
        self.access = access
        self.audit = access.audit
        self.throttle = access.throttle
        self.metrics = metrics
        self.flags = flags
        self.wall = wall
        self.gate = AdminGate(
            role=role, verifier=verifier, access=access, wall=wall,
            refused=lambda outcome: metrics.flag_changes.labels(outcome).inc(),
            action="admin", unauthenticated_code=ADM_UNAUTHENTICATED,
            forbidden_code=ADM_FORBIDDEN)

    async def __call__(self, req: Request) -> Response:
        principal = self._principal(req)
        if isinstance(principal, Response):
            return principal
        if req.method == "GET":
            self.audit.record("admin read feature flags", action="admin.read",
                              outcome="allowed", sub=principal.subject)
            return Response.json({"flags": [f.to_json() for f in self.flags.values.values()]})
        return await self._change(req, principal)

    # -- who is asking ----------------------------------------------------------------------------

    def _principal(self, req: Request) -> Principal | Response:
        return self.gate.principal(req)

    # -- a change ---------------------------------------------------------------------------------

    async def _change(self, req: Request, principal: Principal) -> Response:
        try:
            doc = req.json()
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._refused(principal, f"body is not JSON: {exc}")
        if not isinstance(doc, dict) or "name" not in doc or "value" not in doc:
            return self._refused(
                principal, 'expected a JSON object {"name": <flag>, "value": <JSON value>}')
        name = str(doc["name"])
        try:
            value = validate(name, doc["value"])
        except FlagError as exc:
            return self._refused(principal, str(exc))
        old = self.flags.values.get(name)
        flag = FlagValue(name, value, principal.subject, int(self.wall() * 1e6))
        kv = self.flags.kv
        if kv is not None:
            expected = self.flags.expected_revision(name)
            t0 = trio.current_time()
            try:
                revision = await kv.update(name, flag.encode(), last=expected,
                                           headers={"Xy-Principal": principal.subject})
            except KvRevisionConflict as exc:
                self.metrics.nats_req.labels("kv_put_error").observe(trio.current_time() - t0)
                self.metrics.flag_changes.labels("conflict").inc()
                self.audit.record(
                    "feature flag change refused: the flag changed meanwhile", code=exc.code,
                    action="admin.flag", outcome="conflict",
                    sub=principal.subject, flag=name, expected_revision=expected)
                return Response.json({"error": f"{name}: changed since revision {expected} "
                                               "(another change won); read it again and retry",
                                      "expected_revision": expected}, 409)
            except BridgeError as exc:
                self.metrics.nats_req.labels("kv_put_error").observe(trio.current_time() - t0)
                self.metrics.flag_changes.labels("failed").inc()
                self.flags.remember_in_doubt(flag, expected)
                self.audit.record(
                    "feature flag change failed: the store is unreachable; not applied, and it "
                    "will not take effect later", code=ADM_STORE_UNAVAILABLE, severity="error",
                    action="admin.flag", outcome="failed", sub=principal.subject,
                    flag=name, new=value, error=str(exc), error_code=exc.code)
                return Response.json({"error": f"flag store unavailable, change not applied "
                                               f"(it will not take effect later): {exc}"}, 503)
            self.metrics.nats_req.labels("kv_put").observe(trio.current_time() - t0)
            self.flags.written(name, revision)
            flag = attrs.evolve(flag, revision=revision)
        else:
            self.flags.apply(flag)
        self.metrics.flag_changes.labels("changed").inc()
        self.audit.record(
            "feature flag changed", code=ADM_FLAG_CHANGED, action="admin.flag",
            outcome="allowed", sub=principal.subject, flag=name,
            old=old.value if old else None, new=value, at_us=flag.updated_at_us,
        )
        return Response.json({"flag": flag.to_json(), "old": old.value if old else None})

    def _refused(self, principal: Principal, why: str) -> Response:
        self.metrics.flag_changes.labels("invalid").inc()
        self.audit.record("feature flag change refused", code=ADM_FLAG_INVALID,
                          action="admin.flag", outcome="invalid", sub=principal.subject,
                          reason=why)
        return Response.json({"error": why}, 400)
