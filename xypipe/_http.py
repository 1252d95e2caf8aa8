"""A small HTTP/1.1 server on Trio for /healthz, /metrics and admin routes.

h11 does the protocol; this module only routes. A request asking to upgrade to WebSocket is
handed, bytes and all, to the upgrade handler a stage registered (the gateway), so the browser
socket and the operational endpoints share one port, as Prometheus expects to scrape
``gateway:8080/metrics``.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio

from xypipe._errors import HTTP_HANDLER_FAILED, SharedPortUnsupported
from xypipe._log import get_logger
from xypipe._worker import ports_shared

_log = get_logger("http")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
READ_TIMEOUT = 30.0


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""

    def json(self) -> object:
        """The body parsed as JSON (raises ``UnicodeDecodeError``/``json.JSONDecodeError``)."""
        doc: object = json.loads(self.body.decode("utf-8"))
        return doc


@attrs.frozen
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, doc: object, status: int = 200) -> Response:
        return cls(status, json.dumps(doc, default=str).encode(), "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Awaitable[Response]]
UpgradeHandler = Callable[[trio.abc.Stream, Request], Awaitable[None]]


class ReplayStream(trio.abc.Stream):
    """A stream that first yields bytes already read from ``inner``, then reads ``inner``."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:n], self._prefix[n:]
            await trio.lowlevel.checkpoint()
            return bytes(chunk)
        return bytes(await self._inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def socket(self) -> trio.socket.SocketType | None:
        sock: trio.socket.SocketType | None = getattr(self._inner, "socket", None)
        return sock


class HttpServer:
    """Routes by exact path. Handlers get a :class:`Request` and return a :class:`Response`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, *, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        #: Bind with ``SO_REUSEPORT``: the copies of a process (``workers = N``) listen on one
        #: port and the kernel spreads new connections across them.
        self.reuse_port = reuse_port
        #: When set, every connection is TLS (HTTPS, and WSS for the upgrade handler).
        self.ssl_context = ssl_context
        self._routes: dict[str, dict[str, Handler]] = {}
        self._upgrade: UpgradeHandler | None = None
        #: Around the accept loops only (see :meth:`stop_accepting`).
        self._accepting = trio.CancelScope()

    def route(self, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> None:
        table = self._routes.setdefault(path, {})
        for m in methods:
            table[m] = handler

    def set_upgrade_handler(self, handler: UpgradeHandler) -> None:
        self._upgrade = handler

    def share_routes(self, other: HttpServer) -> None:
        """Answer every route ``other`` has, now and later (not its WebSocket upgrade): a
        worker's private port serves what its stages route on the shared one."""
        self._routes = other._routes

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        if self.reuse_port:
            listeners = await shared_port_listeners(self.host, self.port)
        else:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        _log.info("http listening", host=self.host, port=self.port)
        async with trio.open_nursery() as handlers:
            with self._accepting:
                await trio.serve_listeners(self._handle, listeners, handler_nursery=handlers,
                                           task_status=_Started(task_status, self.port))
            # Accepting stopped: close the sockets so the kernel hands new connections to the
            # other sockets on the port (SO_REUSEPORT); connections already open carry on.
            for listener in listeners:
                await listener.aclose()
            _log.info("http no longer accepting", host=self.host, port=self.port)

    def stop_accepting(self) -> None:
        """Take no new connection (a draining gateway worker); those open are served on."""
        self._accepting.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        peer = ""
        try:
            addr = stream.socket.getpeername()
            peer = f"{addr[0]}:{addr[1]}"
        except OSError:
            pass
        try:
            served: trio.abc.Stream = stream
            if self.ssl_context is not None:
                served = trio.SSLStream(stream, self.ssl_context, server_side=True)
            await self._serve_connection(served, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.abc.Stream, peer: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        raw = bytearray()
        first = True
        while True:
            event = await self._next_event(conn, stream, raw if first else None)
            if event is None or isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            request, bad = await self._read_request(conn, stream, event, peer)
            if bad is not None:
                await self._send(conn, stream, bad)
                return
            assert request is not None
            if request.headers.get("upgrade", "").lower() == "websocket":
                if self._upgrade is None or not first:
                    await self._send(conn, stream, Response.text("no WebSocket here\n", 404))
                    return
                await self._upgrade(ReplayStream(stream, bytes(raw)), request)
                return
            first = False
            response = await self._dispatch(request)
            await self._send(conn, stream, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_event(
        self, conn: h11.Connection, stream: trio.abc.Stream, raw: bytearray | None
    ) -> h11.Event | None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send(conn, stream, Response.text(f"bad request: {exc}\n", 400))
                return None
            if event is h11.NEED_DATA:
                with trio.fail_after(READ_TIMEOUT):
                    data = await stream.receive_some(65536)
                if raw is not None:
                    raw += data
                conn.receive_data(bytes(data))
                continue
            if event is h11.PAUSED or not isinstance(event, h11.Event):
                return None
            return event

    async def _read_request(
        self, conn: h11.Connection, stream: trio.abc.Stream, event: h11.Request, peer: str
    ) -> tuple[Request | None, Response | None]:
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        target = event.target.decode("latin-1")
        parsed = urllib.parse.urlsplit(target)
        body = bytearray()
        is_upgrade = headers.get("upgrade", "").lower() == "websocket"
        while not is_upgrade:
            ev = await self._next_event(conn, stream, None)
            if ev is None:
                return None, Response.text("bad request\n", 400)
            if isinstance(ev, h11.Data):
                body += ev.data
                if len(body) > MAX_BODY:
                    return None, Response.text(f"body over {MAX_BODY} bytes\n", 413)
            elif isinstance(ev, h11.EndOfMessage):
                break
        return Request(
            method=event.method.decode(), path=parsed.path,
            query=urllib.parse.parse_qs(parsed.query), headers=headers, body=bytes(body),
            peer=peer,
        ), None

    async def _dispatch(self, request: Request) -> Response:
        table = self._routes.get(request.path)
        if table is None:
            return Response.text(f"no route for {request.path}\n", 404)
        handler = table.get(request.method)
        if handler is None:
            return Response(405, b"method not allowed\n",
                            headers=(("allow", ", ".join(sorted(table))),))
        try:
            return await handler(request)
        except Exception as exc:
            _log.error("http handler failed", code=HTTP_HANDLER_FAILED, exc=exc,
                       path=request.path)
            return Response.text("internal error\n", 500)

    async def _send(self, conn: h11.Connection, stream: trio.abc.Stream, resp: Response) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("content-type", resp.content_type),
            ("content-length", str(len(resp.body))),
            *resp.headers,
        ]
        try:
            await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=resp.body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return


async def shared_port_listeners(host: str, port: int,
                                backlog: int = 1024) -> list[trio.SocketListener]:
    """Listeners on ``host:port`` bound with ``SO_REUSEPORT``, so other processes that bind the
    same port the same way (the other workers of a process) share it: Linux hashes each new
    connection to one of the listening sockets. Anywhere else this raises
    :class:`~xypipe._errors.SharedPortUnsupported` (the option is missing, or does not
    spread connections)."""
    reuse = getattr(trio.socket, "SO_REUSEPORT", None)
    if reuse is None or not ports_shared():
        raise SharedPortUnsupported(
            f"cannot share port {port} between workers: this platform has no SO_REUSEPORT "
            "that spreads connections (Linux has); run one worker (workers = 1) per host")
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM,
                                          flags=trio.socket.AI_PASSIVE)
    listeners = []
    try:
        for family, kind, proto, _name, addr in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, reuse, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(addr)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class _Started:
    """Report the bound port instead of trio.serve_listeners' list of listeners."""

    def __init__(self, inner: trio.TaskStatus[int], port: int) -> None:
        self._inner = inner
        self._port = port

    def started(self, value: object = None) -> None:
        self._inner.started(self._port)
