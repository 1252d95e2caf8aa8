"""The process HTTP server: routes, errors, keep-alive, and the WebSocket hand-off."""

from __future__ import annotations

import trio

from xypipe._http import HttpServer, Request, Response


async def roundtrip(port: int, raw: bytes, *, until: bytes = b"\r\n\r\n") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(5):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return data
                data += chunk
                if until in data and data.endswith(until.split(b"|")[-1]):
                    return data


async def start(nursery: trio.Nursery) -> HttpServer:
    server = HttpServer("127.0.0.1", 0)

    async def hello(req: Request) -> Response:
        return Response.json({"path": req.path, "q": req.query, "body": req.body.decode()})

    async def boom(req: Request) -> Response:
        raise RuntimeError("handler bug")

    server.route("/hello", hello, methods=("GET", "POST"))
    server.route("/boom", boom)
    await nursery.start(server.serve)
    return server


async def get(port: int, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    raw = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


async def test_routes_answer_and_unknown_paths_and_methods_are_refused():
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        status, body = await get(server.port, "/hello?a=1")
        assert status == 200 and b'"q": {"a": ["1"]}' in body
        status, body = await get(server.port, "/hello", "POST", b"payload")
        assert status == 200 and b'"body": "payload"' in body
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/boom", "DELETE"))[0] == 405
        nursery.cancel_scope.cancel()


async def test_a_failing_handler_answers_500_and_the_server_keeps_serving(caplog):
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        assert (await get(server.port, "/boom"))[0] == 500
        assert (await get(server.port, "/hello"))[0] == 200
        assert any("XY-HTTP-001" in r.getMessage() or getattr(r, "xy_fields", {}).get("code")
                   == "XY-HTTP-001" for r in caplog.records)
        nursery.cancel_scope.cancel()


async def test_malformed_requests_get_400():
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        reply = await roundtrip(server.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()


async def test_keep_alive_serves_several_requests_on_one_connection():
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            for i in range(3):
                await stream.send_all(f"GET /hello?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                with trio.fail_after(5):
                    while f'"i": ["{i}"]'.encode() not in data:
                        data += await stream.receive_some(65536)
        nursery.cancel_scope.cancel()


async def test_websocket_upgrade_is_handed_over_with_the_request_bytes():
    seen: list[tuple[bytes, str]] = []

    async def on_upgrade(stream: trio.abc.Stream, req: Request) -> None:
        replayed = await stream.receive_some(65536)
        seen.append((replayed, req.path))
        await stream.send_all(b"HANDED-OVER")

    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        server.set_upgrade_handler(on_upgrade)
        request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
        reply = await roundtrip(server.port, request, until=b"HANDED-OVER")
        assert reply == b"HANDED-OVER"
        assert seen == [(request, "/ws")]
        nursery.cancel_scope.cancel()
