"""The ``gateway`` stage: serves browsers over WebSocket from the aggregator's ``xy.md.*``.

Put it after a ``nats_source`` that subscribes to the deltas and snapshots::

    [[pipelines.gateway.stages]]
    use = "nats_source"
    subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]

    [[pipelines.gateway.stages]]
    use = "gateway"
    public_key = "configs/dev-keys/gateway-dev.pub.pem"
    allowed_origins = ["*"]

The WebSocket shares the process's HTTP port with ``/healthz``, ``/metrics`` and
``/admin/feature-flags``. The protocol is in docs/protocol.md ("Browser protocol").
"""

from __future__ import annotations

import trio

from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._server import GatewayServer
from xypipe._stage import Stage


class Gateway(Stage):
    """Fan the aggregator's deltas and snapshots out to authenticated browser WebSockets."""

    Config = GatewayOptions
    nats_role = "gateway"
    produces = False
    ready_on_start = False

    async def run(self) -> None:
        if self.ctx.http is None:
            raise RuntimeError(
                "the gateway stage needs the process's HTTP server (enable [http] or "
                "[processes.NAME].http for its process)"
            )
        server = GatewayServer(
            self.config, self.ctx.metrics, self.ctx.log, nats=self.ctx.nats,
            scope=f"pipeline:{self.ctx.pipeline}",
        )
        self.server = server
        self.ctx.resources.setdefault("gateway.servers", []).append(server)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, self.inbox, self.ctx.http)
            self.ctx.set_ready()
