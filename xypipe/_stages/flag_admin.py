"""The ``flag_admin`` stage: ``/admin/feature-flags``, in a process of its own with the admin role.

Gateways only read the feature flags: their NATS role may watch and read the flags' KV bucket
and nothing more (docs/security.md). Changing a flag is this stage's job, in a process that
signs in to NATS as ``admin`` — the only role that may write the bucket::

    [processes.admin]
    http = { port = 8092 }

    [pipelines.admin]
    process = "admin"

    [[pipelines.admin.stages]]
    use = "flag_admin"
    public_key = "secrets/jwt-public.pem"

It serves the route on its process's HTTP port (beside ``/healthz`` and ``/metrics``): bearer
tokens with the admin role, throttling per client address, conditional writes that fail closed
(:mod:`xypipe._gateway._admin`). Every gateway applies (and audits) a change from its watch.
"""

from __future__ import annotations

from typing import Never

import trio

from xypipe._audit import AuditLog
from xypipe._contracts import decoder_for
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._admin import PATH, AdminRoute
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._flagwatch import FlagBoard
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._keywatch import KeyWatch
from xypipe._gateway._options import FlagAdminOptions
from xypipe._gateway._throttle import AuthThrottle
from xypipe._log import get_logger
from xypipe._stage import Stage, StageContext

__all__ = ["FlagAdmin"]


class FlagAdmin(Stage[Never, Never, FlagAdminOptions]):
    """Serve ``/admin/feature-flags``: read and change the feature flags in their KV bucket.

    The running board is the ``flags`` attribute (``runner.stage(pipeline, name,
    FlagAdmin).flags``), for tests and tools.
    """

    requires = frozenset({"nats", "http"})
    nats_role = "admin"
    ready_on_start = False

    def __init__(self, config: FlagAdminOptions, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        self.flags: FlagBoard | None = None

    async def run(self) -> None:
        cfg = self.config
        nats = self.ctx.require_nats()
        http = self.ctx.require_http()
        metrics = GatewayMetrics(self.ctx.metrics)
        audit = AuditLog(get_logger("audit", component="flag_admin"))
        flags = FlagBoard(cfg.flags_bucket, metrics, audit, self.ctx.log,
                          decoder_for(self.ctx.metrics.registry),
                          timeout_s=cfg.nats_timeout_ms / 1000, wall=self._wall,
                          on_change=lambda: None, mode="write")
        self.flags = flags
        verifier = TokenVerifier.from_file(
            cfg.public_key, issuer=cfg.issuer, audience=cfg.audience, leeway_s=cfg.leeway_s,
            max_lifetime_s=cfg.max_token_lifetime_s)
        access = AccessRecorder(metrics, audit, AuthThrottle(cfg.auth_throttle))
        route = AdminRoute(role=cfg.admin_role, verifier=verifier, access=access,
                           metrics=metrics, flags=flags, wall=self._wall)
        keys = KeyWatch(cfg.public_key, verifier, log=self.ctx.log, metrics=self.ctx.metrics,
                        surface="admin", interval_s=cfg.keys_reload_ms / 1000)
        async with trio.open_nursery() as nursery:
            await nursery.start(keys.run)
            await nursery.start(flags.watch, nats)
            http.route(PATH, route, methods=("GET", "PUT"))
            self.ctx.set_ready()

    def _wall(self) -> float:
        return self.ctx.clock.wall_us() / 1e6
