"""``xypipe demo smoke``: is every part of the running demo working? One verdict line each.

- **demo**: the tree ``demo up`` started still runs.
- **healthz PROCESS**: each process's ``/healthz`` says ready.
- **page**: the demo page is served.
- **nats**: the bus admits the ``reader`` role, and every process that signs in to it reports
  its health there (``xy.exec.health.*``), ready.
- **websocket**: what a browser does, through :mod:`xypipe.client` — the page's
  ``/config.json`` names the gateway and the groups, ``/dev/token`` gives a token — subscribe to
  every group and receive until each has its snapshot and deltas after it: every delta in
  sequence (no gap, no duplicate, no epoch trouble) and every checksum verified.

Checks run side by side (each with its own time limit) and are printed in this order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import attrs
import trio
from google.protobuf.message import DecodeError

import xypipe.client as xc
from xypipe._demo._layout import Endpoint
from xypipe._demo._probe import get, health
from xypipe._demo._procs import running
from xypipe._demo._state import StateDir, TreeState
from xypipe._errors import BridgeError, XyError
from xypipe._nats import connect
from xypipe._role_grants import HEALTH_SUBJECT, inbox_prefix
from xypipe.contracts import HealthReport

__all__ = ["Verdict", "smoke"]

#: Deltas each group must show after its snapshot (every one in sequence, checksums verified).
DELTAS_PER_GROUP = 5
#: The processes publish their health on NATS this often (xypipe._runner.HEALTH_INTERVAL).
HEALTH_EVERY_S = 5.0


@attrs.frozen
class Verdict:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<5} {self.name:<20} {self.detail}"


async def _healthz(e: Endpoint) -> Verdict:
    h = await health(e)
    return Verdict(f"healthz {e.process}", h.ready, f"{e.base}/healthz {h.detail}")


async def _page(url: str) -> Verdict:
    status, body = await get(url)
    ok = status == 200 and b"<title>xypipe" in body
    return Verdict("page", ok, f"{url} " + ("served" if ok else f"answered {status or 'nothing'}"))


async def _nats(tree: TreeState, timeout_s: float) -> Verdict:
    url = tree.layout.nats_url
    assert url is not None
    key = tree.layout.key_of("reader", Path(tree.cwd))
    want = set(tree.layout.on_nats)
    reports: dict[str, bool] = {}
    try:
        with trio.move_on_after(timeout_s):
            async with connect(url, name="xypipe-demo-smoke", nkeys_seed=key,
                               inbox_prefix=inbox_prefix("reader") if key else "_INBOX",
                               connect_deadline=timeout_s) as nc, \
                    nc.subscribe(f"{HEALTH_SUBJECT}.*") as sub:
                async for batch in sub:
                    for msg in batch:
                        report = HealthReport.FromString(msg.data)
                        reports[report.service] = report.ready
                    if want <= reports.keys():
                        break
    except (BridgeError, DecodeError) as exc:
        return Verdict("nats", False, f"{url}: {exc}")
    missing = sorted(want - reports.keys())
    not_ready = sorted(name for name in want & reports.keys() if not reports[name])
    who = "as reader" if key else "(no credentials)"
    if missing:
        return Verdict("nats", False, f"{url} {who}: no health report from "
                                      f"{', '.join(missing)} within {timeout_s:g} s")
    if not_ready:
        return Verdict("nats", False, f"{url} {who}: not ready: {', '.join(not_ready)}")
    return Verdict("nats", True, f"{url} {who}: health reports from {', '.join(sorted(want))}, "
                                 "all ready")


@attrs.define
class _Group:
    snapshots: int = 0
    deltas: int = 0


@attrs.define
class _Watch:
    """What the WebSocket check has seen: per group, and every broken rule in order."""

    groups: dict[str, _Group]
    problems: list[str] = attrs.field(factory=list)

    def done(self) -> bool:
        return bool(self.problems) or all(
            g.snapshots and g.deltas >= DELTAS_PER_GROUP for g in self.groups.values())

    def take(self, update: xc.Update) -> None:
        if isinstance(update, xc.SnapshotApplied) and update.group in self.groups:
            self.groups[update.group].snapshots += 1
            if update.checksum_mismatches:
                self.problems.append(f"{update.group}: {update.checksum_mismatches} checksum "
                                     "mismatches in its snapshot")
        elif isinstance(update, xc.DeltaApplied) and update.group in self.groups:
            if update.checksum_mismatches:
                self.problems.append(f"{update.group}: delta seq {update.seq} has "
                                     f"{update.checksum_mismatches} checksum mismatches")
            elif self.groups[update.group].snapshots:
                self.groups[update.group].deltas += 1
        elif isinstance(update, xc.DeltaSkipped) and update.verdict != "held":
            # "held" waits for the snapshot the client asked for; anything else broke a rule.
            self.problems.append(f"{update.group}: delta shard {update.shard} seq "
                                 f"{update.seq} not applied ({update.verdict})")
        elif isinstance(update, xc.ErrorReceived):
            self.problems.append(f"gateway error {update.name}: {update.message}")
        elif isinstance(update, xc.BadFrame):
            self.problems.append(f"bad frame: {update.reason}")


async def _websocket(page: str, timeout_s: float) -> Verdict:
    status, body = await get(f"{page}config.json")
    if status != 200:
        return Verdict("websocket", False, f"{page}config.json answered {status or 'nothing'}")
    doc = json.loads(body)
    ws_url, groups = str(doc.get("wsUrl", "")), [str(g) for g in doc.get("groups", [])]
    token = ""
    if doc.get("tokenUrl"):
        status, body = await get(page.rstrip("/") + str(doc["tokenUrl"]), data=b"")
        if status != 200:
            return Verdict("websocket", False, f"{doc['tokenUrl']} answered "
                                               f"{status or 'nothing'}")
        token = str(json.loads(body)["token"])
    watch = _Watch({g: _Group() for g in groups})
    verified = 0
    try:
        with trio.move_on_after(timeout_s):
            async with xc.connect(ws_url, token=token, reconnect=False) as client:
                await client.subscribe(*groups)
                async for update in client:
                    watch.take(update)
                    if watch.done():
                        break
                stats = client.statistics()
                verified = stats.checksums_verified
                if stats.checksum_mismatches and not watch.problems:
                    watch.problems.append(f"{stats.checksum_mismatches} checksum mismatches")
    except XyError as exc:
        return Verdict("websocket", False, f"{ws_url}: {exc} [{exc.code}]")
    slow = [name for name, g in watch.groups.items()
            if not (g.snapshots and g.deltas >= DELTAS_PER_GROUP)]
    if slow and not watch.problems:
        watch.problems.append(f"within {timeout_s:g} s no snapshot and {DELTAS_PER_GROUP} "
                              f"deltas after it for {', '.join(slow)}")
    if watch.problems:
        return Verdict("websocket", False, f"{ws_url}: {'; '.join(watch.problems)}")
    deltas = sum(g.deltas for g in watch.groups.values())
    return Verdict("websocket", True,
                   f"{ws_url}: {len(groups)} groups ({', '.join(groups)}) synced from their "
                   f"snapshots, {deltas} deltas in sequence, {verified} checksums verified")


async def smoke(state: StateDir, *, timeout_s: float) -> list[Verdict]:
    """Every check's verdict, in a fixed order."""
    tree = state.tree()
    proc = running(tree.process) if tree is not None else None
    if tree is None or proc is None:
        return [Verdict("demo", False, "not up (`xypipe demo up` starts it)")]
    checks: list[Callable[[], Awaitable[Verdict]]] = [
        *(partial(_healthz, e) for e in tree.layout.endpoints),
        *(partial(_page, p) for p in tree.layout.pages),
    ]
    if tree.layout.nats_url is not None:
        checks.append(partial(_nats, tree, max(timeout_s, HEALTH_EVERY_S * 2 + 1)))
    if tree.layout.pages:
        checks.append(partial(_websocket, tree.layout.pages[0], timeout_s))
    verdicts: list[Verdict | None] = [None] * len(checks)

    async def one(i: int) -> None:
        verdicts[i] = await checks[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(checks)):
            nursery.start_soon(one, i)
    return [Verdict("demo", True, f"xypipe run (pid {tree.process.pid}) up since {tree.since}"),
            *(v for v in verdicts if v is not None)]
