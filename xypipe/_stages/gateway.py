"""The ``gateway`` stage: serves browsers over WebSocket from the aggregator's ``xy.md.*``.

Put it after a ``nats_source`` that subscribes to the deltas and snapshots::

    [[pipelines.gateway.stages]]
    use = "nats_source"
    subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]

    [[pipelines.gateway.stages]]
    use = "gateway"
    public_key = "configs/dev-keys/gateway-dev.pub.pem"
    allowed_origins = ["*"]

The WebSocket shares the process's HTTP port with ``/healthz`` and ``/metrics``. The gateway
only reads the feature flags; ``/admin/feature-flags`` is the ``flag_admin`` stage's, in a
process of its own (:mod:`xypipe._stages.flag_admin`). The protocol is in docs/protocol.md
("Browser protocol").

The stage takes part in its process's graceful drain (:mod:`xypipe._drain_request`: SIGTERM, or
``POST /admin/drain`` with the ``drain_role``): it moves its clients away over ``drain_s``
(:meth:`GatewayServer.drain`) before the process stops.
"""

from __future__ import annotations

from typing import Never

import trio

from xypipe._drain_request import DRAIN, DrainRequest, DrainTicket
from xypipe._gateway._drain_route import DRAIN_PATH, DrainRoute
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._server import GatewayServer
from xypipe._http import HttpServer
from xypipe._stage import Stage, StageContext
from xypipe.abc import HttpRoutes, Msg


class Gateway(Stage[list[Msg] | Msg, Never, GatewayOptions]):
    """Fan the aggregator's deltas and snapshots out to authenticated browser WebSockets.

    The running server is the ``server`` attribute (``runner.stage(pipeline, name,
    Gateway).server``): its connections, hub and flags, for tests and tools.
    """

    # The WebSocket shares the process's HTTP port; NATS is optional (without it there are no
    # feature flags, known groups or snapshot look-ups — a gateway fed by other means).
    requires = frozenset({"http"})
    nats_role = "gateway"
    # Copies of a gateway each read every group from NATS and serve their own connections.
    scales_out = True
    ready_on_start = False

    def __init__(self, config: GatewayOptions, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        self.server: GatewayServer | None = None

    async def run(self) -> None:
        http = self.ctx.require_http()
        server = GatewayServer(
            self.config, self.ctx.metrics, self.ctx.log, nats=self.ctx.nats,
            scope=f"pipeline:{self.ctx.pipeline}",
        )
        self.server = server
        drain = self.ctx.shared.get(DRAIN)
        http.route(DRAIN_PATH, DrainRoute(
            role=self.config.drain_role, verifier=server.verifier, access=server.access,
            metrics=server.metrics, request_drain=drain.request, drain_s=self.config.drain_s,
            wall=server.wall), methods=("POST",))
        ticket = drain.join()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._serve, server, http, nursery.cancel_scope)
                nursery.start_soon(self._drain_when_asked, server, drain, ticket)
                self.ctx.set_ready()
        finally:
            ticket.finish()

    async def _serve(self, server: GatewayServer, http: HttpRoutes, scope: trio.CancelScope, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await server.run(self.inbox, http, task_status=task_status)
        scope.cancel()  # the pipeline stops: no drain to wait for any more

    async def _drain_when_asked(self, server: GatewayServer, drain: DrainRequest,
                                ticket: DrainTicket) -> None:
        await drain.requested.wait()
        http = self.ctx.http
        # The shared port's listener closes (the kernel hands new connections to the other
        # workers); a server that is not ours to close (a test's) keeps it.
        stop = http.stop_accepting if isinstance(http, HttpServer) else None
        try:
            await server.drain(drain.reason, stop)
        finally:
            ticket.finish()
