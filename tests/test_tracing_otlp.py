"""Tracing from the standard environment, in a real process: ``xypipe publish`` with
``OTEL_TRACES_EXPORTER=otlp`` exports its spans over OTLP/HTTP to a receiver in this test (a
plain HTTP server reading the protobuf requests the collector would), and every tick it sent
carries the ``traceparent`` of its exported span in its NATS headers."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from xypipe.abc import NatsClient

ROOT = Path(__file__).resolve().parent.parent
TICKS = 300


class Receiver(ThreadingHTTPServer):
    """What an OTLP/HTTP collector receives on ``/v1/traces``, kept in arrival order."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.paths.append(self.path)
        self.server.requests.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads the requests, not an access log


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_xypipe_publish_exports_otlp_from_the_environment_and_heads_its_ticks(
        nats_client: NatsClient, nats_url: str, receiver: Receiver, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "xy-publisher-test",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.0"}
    parents: list[str] = []
    async with nats_client.subscribe("xy.src.tick.>", max_batch=1024) as sub:
        await nats_client.flush()
        proc = await trio.run_process(
            [sys.executable, "-m", "xypipe", "publish", "--url", nats_url, "--symbols", "20",
             "--rate", "1000", "--count", str(TICKS), "--no-stream"],
            cwd=tmp_path, env=env, capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout)["ticks"] == TICKS
        with trio.fail_after(30):  # a hang guard, not a timed assertion
            async for batch in sub:
                parents.extend((m.headers or {}).get("traceparent", "") for m in batch)
                if len(parents) >= TICKS:
                    break
    # The process exported before it exited (the SDK's shutdown flushes what is queued).
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = [(rs, span) for req in receiver.requests for rs in req.resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    assert len(spans) == TICKS
    services = {a.value.string_value for rs, _ in spans for a in rs.resource.attributes
                if a.key == "service.name"}
    assert services == {"xy-publisher-test"}
    assert {span.name for _, span in spans} == {"publisher"}
    exported = {(span.trace_id.hex(), span.span_id.hex()) for _, span in spans}
    assert len(parents) == TICKS
    heads = [p.split("-") for p in parents]
    assert all(len(h) == 4 and h[0] == "00" and int(h[3], 16) & 1 for h in heads)  # sampled
    assert {(h[1], h[2]) for h in heads} == exported
