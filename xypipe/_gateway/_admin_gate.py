"""Who may use an admin route: a bearer token with the admin role, throttled per address.

One gate for every admin route — ``/admin/feature-flags`` (:mod:`._admin`) and a gateway
worker's ``/admin/drain`` (:mod:`._drain_route`): an address that keeps failing is refused (429)
before its token is looked at; no token or a bad one is 401, a token without the role 403. Every
refusal is audited with the route's code and counted through ``refused(outcome)``
(``unauthenticated`` or ``forbidden``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from xypipe._audit import claimed_subject
from xypipe._errors import AUTH_THROTTLED, AuthError
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._auth import AuthExpired, Principal, TokenVerifier
from xypipe._gateway._throttle import client_address
from xypipe._http import Request, Response

__all__ = ["AdminGate"]


@attrs.frozen
class AdminGate:
    role: str
    verifier: TokenVerifier
    access: AccessRecorder
    wall: Callable[[], float]
    #: Counts a refusal by outcome (``unauthenticated``, ``forbidden``).
    refused: Callable[[str], None]
    #: The audit line's ``action`` and codes for this route.
    action: str
    unauthenticated_code: str
    forbidden_code: str

    def principal(self, req: Request) -> Principal | Response:
        """The verified admin principal, or the refusal to answer with (401, 403, 429)."""
        audit = self.access.audit
        throttle = self.access.throttle
        header = req.headers.get("authorization", "")
        request = {"method": req.method, "path": req.path, "peer": req.peer}
        address = client_address(req.peer)
        now = trio.current_time()
        verdict = throttle.check(address, now)
        if not verdict.allowed:
            # Answered before the token is looked at; counted, and summarised at the lockout.
            self.access.throttled("admin", address)
            retry = math.ceil(verdict.retry_after_s)
            return attrs.evolve(
                Response.json({"error": f"authentication throttled: too many failed attempts "
                                        f"from {address}; retry in {retry} s",
                               "code": AUTH_THROTTLED, "retry_after_s": retry}, 429),
                headers=(("retry-after", str(retry)),))
        if not header.lower().startswith("bearer "):
            self.access.admin_failed(address, "missing", now)
            self.refused("unauthenticated")
            audit.record("admin request without a bearer token", code=self.unauthenticated_code,
                         action=self.action, outcome="denied", sub=None, details=request)
            return Response.json({"error": "missing 'Authorization: Bearer <JWT>'"}, 401)
        token = header[7:].strip()
        try:
            principal = self.verifier.verify(token, self.wall())
        except AuthError as exc:
            self.access.admin_failed(
                address, "expired" if isinstance(exc, AuthExpired) else "invalid", now)
            self.refused("unauthenticated")
            audit.record("admin request with a bad token", code=self.unauthenticated_code,
                         outcome="denied", sub=None, claimed_sub=claimed_subject(token),
                         reason=exc.message, action=self.action, details=request)
            return Response.json({"error": f"token refused: {exc.message}"}, 401)
        throttle.success(address, trio.current_time())
        if not principal.has_role(self.role):
            self.refused("forbidden")
            audit.record("admin request without the admin role", code=self.forbidden_code,
                         outcome="denied", sub=principal.subject,
                         roles=sorted(principal.roles), action=self.action, details=request)
            return Response.json(
                {"error": f"principal {principal.subject!r} lacks role {self.role!r}"}, 403)
        return principal
