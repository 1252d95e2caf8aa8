"""A real TCP proxy between a client and the gateway, so a test can cut or stall the network
while both ends keep running (the client sees what a dropped or dead link looks like)."""

from __future__ import annotations

import trio


class Proxy:
    """Listens on ``port``, forwards every connection to ``127.0.0.1:target``.

    ``cut()`` closes every open connection at once; ``refuse`` makes new ones fail until it is
    cleared; ``stall()`` stops forwarding on open connections (the sockets stay open: a link
    that went dead without a word)."""

    def __init__(self) -> None:
        self.port = 0
        self.target = 0
        self.refuse = False
        self.accepted = 0
        self._links: list[tuple[trio.SocketStream, trio.SocketStream, trio.CancelScope]] = []
        self._stalled: set[trio.SocketStream] = set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refuse or not self.target:
            await client.aclose()
            return
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
        except OSError:
            await client.aclose()
            return
        self.accepted += 1
        with trio.CancelScope() as scope:
            link = (client, upstream, scope)
            self._links.append(link)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, scope)
                    nursery.start_soon(self._pump, upstream, client, scope)
            finally:
                self._links.remove(link)
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(upstream)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream,
                    link: trio.CancelScope) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    break
                if src in self._stalled:
                    continue  # swallowed: the link is dead but nobody says so
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.cancel()

    def cut(self) -> int:
        """Close every open connection; returns how many there were."""
        links = list(self._links)
        for _, _, scope in links:
            scope.cancel()
        return len(links)

    def stall(self) -> None:
        """Stop forwarding in both directions on every open connection."""
        for client, upstream, _ in self._links:
            self._stalled.update((client, upstream))

