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
"""

from __future__ import annotations

from typing import Never

import trio

from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._server import GatewayServer
from xypipe._stage import Stage, StageContext
from xypipe.abc import Msg


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
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, self.inbox, http)
            self.ctx.set_ready()
