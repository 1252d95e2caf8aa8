"""Tracing from the standard environment, in real processes, exported over OTLP/HTTP to a
receiver in this test (a plain HTTP server reading the protobuf requests a collector would):

* ``xypipe publish`` with ``OTEL_TRACES_EXPORTER=otlp``: every tick it sent carries the
  ``traceparent`` of its exported span in its NATS headers;
* the demo tree (``xypipe run configs/demo.toml``: the publisher in the parent, the aggregator and
  the gateway each in its own child process) at 5 % sampling: one sampled tick's trace crosses
  the three processes, publisher -> ingest -> conflate -> publish -> gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_demo import demo_copy

from xypipe.abc import NatsClient

ROOT = Path(__file__).resolve().parent.parent
TICKS = 300


class Receiver(ThreadingHTTPServer):
    """What an OTLP/HTTP collector receives on ``/v1/traces``, kept in arrival order."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        #: Called (in the server's thread) after each request is kept.
        self.arrived: Callable[[], None] = lambda: None
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.paths.append(self.path)
            self.server.requests.append(ExportTraceServiceRequest.FromString(body))
        self.server.arrived()
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


Span = tuple[int, str, bytes, bytes]  # (pid, name, span id, parent span id)


def spans_by_trace(receiver: Receiver) -> dict[bytes, list[Span]]:
    """Every exported span by trace id, with the pid of the process that exported it."""
    with receiver.lock:
        requests = list(receiver.requests)
    out: dict[bytes, list[Span]] = {}
    for req in requests:
        for rs in req.resource_spans:
            pid = next((a.value.int_value for a in rs.resource.attributes
                        if a.key == "process.pid"), 0)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.setdefault(span.trace_id, []).append(
                        (pid, span.name, span.span_id, span.parent_span_id))
    return out


def crossing(receiver: Receiver) -> list[Span] | None:
    """A trace with every stage's span, in order of the path; ``None`` while there is none."""
    order = ("publisher", "ingest", "conflate", "publish", "gateway")
    for spans in spans_by_trace(receiver).values():
        first = {}
        for s in spans:
            first.setdefault(s[1], s)
        if all(n in first for n in order):
            return [first[n] for n in order]
    return None


async def test_one_sampled_tick_crosses_the_demo_processes(
        receiver: Receiver, tmp_path: Path) -> None:
    config_path = demo_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "xy-demo",
           "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.05",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    found = None
    token = trio.lowlevel.current_trio_token()
    changed = trio.Event()

    def wake() -> None:
        changed.set()

    receiver.arrived = lambda: trio.from_thread.run_sync(wake, trio_token=token)
    try:
        with trio.fail_after(90):  # a hang guard, not a timed assertion
            while (found := crossing(receiver)) is None:
                await changed.wait()
                changed = trio.Event()
    finally:
        receiver.arrived = lambda: None
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(15):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    publisher, ingest, conflate, publish, gateway = found
    # One chain of parents, from the tick to the gateway's frame write.
    assert publisher[3] == b""
    assert (ingest[3], conflate[3], publish[3], gateway[3]) == (
        publisher[2], ingest[2], conflate[2], publish[2])
    # Three processes: the publisher (the tree's parent), the aggregator, the gateway.
    assert publisher[0] and ingest[0] and gateway[0]
    assert ingest[0] == conflate[0] == publish[0]
    assert len({publisher[0], ingest[0], gateway[0]}) == 3
