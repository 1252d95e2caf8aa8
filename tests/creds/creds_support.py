"""Helpers of the trust-chain tests: a chain, a client signed in as a role (its refusals counted
and explained as a process's are), the audit lines and events a test waits for."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
import pytest
import trio

from xypipe._creds import Chain, ChainOptions, ClientAuth, init_chain
from xypipe._embedded import EmbeddedNats
from xypipe._metrics import Metrics
from xypipe._nats import BridgeEvent, NatsClient, Refusal, connect
from xypipe._nats_session import refusal_counter
from xypipe._nats_signin import SignIn


def make_chain(root: Path, **options: object) -> Chain:
    return init_chain(root, ChainOptions(**options), now=time.time())  # type: ignore[arg-type]


class Refusals:
    """What a process does with the server's refusals: ``nats_refusals_total{reason, op}``
    in its registry (the bridge writes the audit line)."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self._counter = refusal_counter(self.metrics)
        self.seen: list[Refusal] = []

    def __call__(self, refusal: Refusal) -> None:
        self.seen.append(refusal)
        self._counter.labels(refusal.reason, refusal.op).inc()

    def count(self, reason: str, op: str) -> float:
        return self.metrics.sample("nats_refusals_total", {"reason": reason, "op": op}) or 0.0


def audited(caplog: pytest.LogCaptureFixture, **match: object) -> list[dict[str, object]]:
    """The audit lines of the test so far with every field in ``match``."""
    lines = [getattr(r, "xy_fields", {}) for r in caplog.records]
    return [f for f in lines
            if f.get("audit") and all(f.get(k) == v for k, v in match.items())]


def as_role(server: EmbeddedNats, chain: Chain, role: str, *, creds: Path | None = None,
            refusals: Refusals | None = None,
            **options: object) -> AbstractAsyncContextManager[NatsClient]:
    """Connect as ``role``: its ``.creds`` file (read by nats-py at every connect), its client
    certificate, its inbox prefix — and, as a process does, its refusals counted (with
    ``refusals``), audited with the role as principal and explained from the chain."""
    auth = ClientAuth.from_chain(chain.paths.root, role)
    if creds is not None:
        auth = attrs.evolve(auth, creds=creds)
    signin = SignIn(role=auth.role, principal=auth.role, inbox_prefix="", creds=auth.creds,
                    chain=chain.paths.root)
    return connect(server.url, name=f"test-{role}", **auth.connect_options(),
                   connect_timeout=1.0, principal=auth.role, on_refusal=refusals,
                   explain_refusal=lambda r: signin.explain(r, time.time()),
                   **options)  # type: ignore[arg-type]


async def next_event(events: trio.MemoryReceiveChannel[BridgeEvent], kind: str,
                     containing: str = "") -> BridgeEvent:
    """The next event of ``kind`` whose detail contains ``containing`` (hang guard 10 s).

    Case-insensitive: nats-py lower-cases the server's ``-ERR`` text (subjects included)."""
    with trio.fail_after(10):
        async for event in events:
            if event.kind == kind and containing.lower() in event.detail.lower():
                return event
    raise AssertionError(f"the event stream ended before a {kind!r} event")
