"""Chaos: the whole stack as a user runs it, one injection of each fault kind.

Real nats-server, ``xypipe run`` (aggregator and gateway child processes), a feed publishing
ticks, three WebSocket clients verifying every sequence and checksum. After each fault: the
clients get fresh deltas of every group again (no silent freeze), saw no hole, repeat or
checksum mismatch (a snapshot resync is allowed), the affected processes' ``/healthz`` went
not-ready and came back, and once the feed stops every book shows what the source stream
accepted. Machinery: ``chaos_faults.py``; recovery times: ``bench/chaos.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_faults import (
    EMBEDDED_ONLY,
    FAULTS,
    SNAPSHOT_MS,
    check_conservation,
    inject_and_check,
    running_stack,
)

pytestmark = pytest.mark.nats


@pytest.mark.parametrize("kind", sorted(FAULTS))
async def test_clients_see_no_hole_and_everything_comes_back_after(kind: str, tmp_path: Path
                                                                  ) -> None:
    nats = "embedded" if kind in EMBEDDED_ONLY else "external"
    report = ""
    async with running_stack(tmp_path, nats=nats, snapshot_ms=SNAPSHOT_MS.get(kind)) as stack:
        outcome = await inject_and_check(stack, kind)
        failures = list(outcome.failures)
        if outcome.recovery_s is not None:
            # Only a stack that came back can be asked whether it lost anything.
            lost, _volumes = await check_conservation(stack)
            failures += lost
        if failures:
            report = "\n".join([*failures, f"fault: {outcome.note}", stack.diagnostics()])
    if report:
        pytest.fail(report, pytrace=False)
