"""Projections: what a tab receives when it subscribes to a projection instead of its group.

    python bench/projections.py                # 20 s of the demo market
    python bench/projections.py --seconds 60

An embedded nats-server; one process runs the aggregator (with two projections
of one group: a Top-20 by volume with a margin of 5, and a 20-symbol watchlist), the gateway and
the demo market's publisher (configs/demo.toml: 500 symbols, 4,000 ticks/s, no bursts); three
Python SDK clients subscribe to the group, to the Top-K and to the watchlist. Reported per
client: WebSocket bytes and frames per second and symbol entries per second, after a 5 s
warm-up. (The browser worker's CPU per tab is not measured here: one process holds every side.)
Results: bench/results/projections.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import env_note, save

import xypipe
import xypipe.client
from xypipe._client._updates import DeltaApplied, SnapshotApplied
from xypipe._embedded import embedded_nats
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, generate_ed25519_keypair, mint

GROUP = "equities"
TOP_K, MARGIN = 20, 5


def aggregator_config(url: str, watch: list[str]) -> Any:
    projections = [
        {"name": "top", "group": GROUP, "top_k": TOP_K, "margin": MARGIN, "top_by": "vol"},
        {"name": "watch", "group": GROUP, "symbols": watch},
    ]
    stages = [{"use": "ingest"}, {"use": "dedupe"}, {"use": "shard"}, {"use": "conflate"},
              {"use": "snapshot", "projections": projections}, {"use": "publish"}]
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"aggregator": {"stages": stages}}})


def gateway_config(url: str, public_key: Path) -> Any:
    gw = {"use": "gateway", "name": "gateway", "public_key": str(public_key),
          "allowed_origins": ["*"], "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE}
    # The flag_admin stage makes the feature-flag bucket the gateway reads (as in the tests).
    admin = {"use": "flag_admin", "name": "admin", "public_key": str(public_key),
             "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE}
    return xypipe.parse_config({"nats": {"url": url}, "http": {"port": 0}, "pipelines": {
        "gateway": {"stages": [{"use": "nats_source", "name": "md",
                                "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"]}, gw]},
        "admin": {"stages": [admin]}}})


def publisher_config(url: str) -> Any:
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"publisher": {"stages": [{
                                    "use": "publisher", "symbols": 500, "rate": 4000.0,
                                    "seed": 1, "contracts_every_s": 5.0}]}}})


def watchlist() -> list[str]:
    """20 symbols of the demo market's group (the publisher's contracts name the group)."""
    from xypipe._publisher import MarketSim

    return [f"{c.venue}.{c.symbol}" for c in MarketSim(500, seed=1).contracts()
            if c.group == GROUP][:20]


class Tab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.entries = 0
        self.start: tuple[int, int] = (0, 0)
        self.end: tuple[int, int] = (0, 0)

    async def read(self, client: Any) -> None:
        async for u in client:
            if isinstance(u, DeltaApplied):
                self.entries += len(u.symbols)
            elif isinstance(u, SnapshotApplied):
                self.entries += u.symbols


async def run(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        private, public = generate_ed25519_keypair()
        pub_path = Path(tmp) / "gw.pub.pem"
        pub_path.write_bytes(public)
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(private, None)
        async with embedded_nats(data_dir=Path(tmp) / "nats") as server:
            url = server.url
            agg = xypipe.Runner(aggregator_config(url, watchlist()))
            gw = xypipe.Runner(gateway_config(url, pub_path))
            pub = xypipe.Runner(publisher_config(url))
            tabs = {name: Tab(name) for name in (GROUP, f"{GROUP}/top", f"{GROUP}/watch")}
            async with trio.open_nursery() as nursery:
                await nursery.start(agg.run)
                await nursery.start(gw.run)
                await nursery.start(pub.run)
                assert gw.http is not None
                token = mint(key, subject="bench", allow=["xy.md.>"],  # type: ignore[arg-type]
                             now=time.time(), ttl_s=3600, issuer=DEV_ISSUER,
                             audience=DEV_AUDIENCE)
                clients = []
                for name, tab in tabs.items():
                    c = await nursery.start(_client, f"ws://127.0.0.1:{gw.http.port}/ws", token,
                                            name, tab)
                    clients.append((tab, c))
                await trio.sleep(5)  # warm-up: groups and projections known, books synced
                for tab, c in clients:
                    st = c.statistics()
                    tab.start = (st.bytes, st.frames)
                    tab.entries = 0
                await trio.sleep(seconds)
                for tab, c in clients:
                    st = c.statistics()
                    tab.end = (st.bytes, st.frames)
                pub.stop()
                gw.stop()
                agg.stop()
                nursery.cancel_scope.cancel()
    rows = {}
    for name, tab in tabs.items():
        rows[name] = {
            "bytes_per_s": round((tab.end[0] - tab.start[0]) / seconds),
            "frames_per_s": round((tab.end[1] - tab.start[1]) / seconds, 1),
            "entries_per_s": round(tab.entries / seconds),
        }
    return {"seconds": seconds, "group": GROUP, "top_k": TOP_K, "margin": MARGIN,
            "tabs": rows, "env": env_note()}


async def _client(url: str, token: str, name: str, tab: Tab, *,
                  task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    async with xypipe.client.connect(url, token=token) as c:
        await c.subscribe(name)
        task_status.started(c)
        await tab.read(c)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Projections: what one tab receives",
        "",
        f"Demo market (500 symbols, 4,000 ticks/s), group `{r['group']}`, {r['seconds']:g} s; "
        f"Top-K = {r['top_k']} by volume, margin {r['margin']}; watchlist = 20 symbols. "
        "Python SDK clients through the gateway.",
        "",
        "| subscription | bytes/s | frames/s | entries/s |",
        "|---|---|---|---|",
    ]
    for name, row in r["tabs"].items():
        lines.append(f"| `{name}` | {row['bytes_per_s']:,} | {row['frames_per_s']} | "
                     f"{row['entries_per_s']:,} |")
    env = r["env"]
    lines += ["", f"Python {env['python']}, {env['cpus']} CPUs, {env['when']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    result = trio.run(run, args.seconds)
    text = markdown(result)
    print(text)
    save("projections", result, text)


if __name__ == "__main__":
    main()
