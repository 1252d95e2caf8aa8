"""``xypipe publish`` (the synthetic market) and ``xypipe tail`` (decode what flows on NATS).

::

    xypipe publish --rate 4000 --symbols 500 --seed 1 --duplicate 0.01 --reorder 0.01
    xypipe publish --count 200000 --record bench/data/market.tape
    xypipe publish --replay bench/data/market.tape --rate 40000
    xypipe publish --tape bench/data/demo-market.tape --speed 10x   # a tape (docs/tapes.md)
    xypipe tail 'xy.md.>'                 # one line per delta / snapshot
    xypipe tail 'xy.md.>' --verify --seconds 10   # rebuild the books, check every checksum
    xypipe tail --ws ws://127.0.0.1:8080/ws --token "$(xypipe token)" fx rates --verify
                                          # what a browser receives, through xypipe.client

Against the embedded demo (its NATS admits its role users only, docs/security.md): run from the
directory the demo runs in and both commands find the demo's keys in ``var/nats/auth/`` —
``publish`` signs in as the ``adapter`` role, ``tail`` as ``reader``. Elsewhere, pass
``--nkey DATA_DIR/auth/ROLE.nk``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import attrs
import trio
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from xypipe._cli_common import add_log_options
from xypipe._cli_tail_ws import TOKEN_ENV
from xypipe._cli_tail_ws import run as tail_ws
from xypipe._config import AppConfig
from xypipe._errors import CLI_TAIL_UNDECODABLE, NATS_NO_CREDENTIALS, ContractError
from xypipe._log import get_logger
from xypipe._progress import Bar, progress
from xypipe._tape import Tape
from xypipe.abc import NatsClient
from xypipe.contracts import Contract, Delta, Snapshot, Tick, decode

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_SUBJECTS = ["xy.md.>"]
#: Where the demo (configs/demo.toml, run from this directory) keeps its NATS role keys.
DEMO_DATA_DIR = "var/nats"
_NKEY_HELP = ("file with the NKey seed to sign in with (default: the embedded demo's {role} key "
              f"in ./{DEMO_DATA_DIR}/auth/ when --url is the default and the file exists)")

_log = get_logger("cli")


@attrs.frozen
class Credentials:
    """How a command line tool signs in: an NKey seed file and the inbox its role may read."""

    nkey: str | None = None
    inbox_prefix: str = "_INBOX"


def credentials(url: str, nkey: str | None, role: str) -> Credentials:
    """``--nkey`` as given (a role's key file is known by its name: ``ROLE.nk``), else the
    demo's key of ``role`` when the tool points at the demo's default URL, else none."""
    from xypipe._nats_keys import seed_file_of
    from xypipe._nats_roles import ROLES, inbox_prefix
    from xypipe._role_grants import canonical_role

    if nkey is not None:
        stem = canonical_role(pathlib.Path(nkey).stem)
        return Credentials(nkey, inbox_prefix(stem) if stem in ROLES else "_INBOX")
    demo_key = seed_file_of(DEMO_DATA_DIR, role)
    if url == DEFAULT_URL and demo_key.exists():
        print(f"signing in as the embedded demo's {role!r} role ({demo_key})", file=sys.stderr)
        return Credentials(str(demo_key), inbox_prefix(role))
    if url == DEFAULT_URL:
        _log.info("no embedded demo key found; connecting without credentials",
                  code=NATS_NO_CREDENTIALS, looked_for=str(demo_key))
    return Credentials()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("publish", help="publish synthetic ticks (the demo market)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"NATS URL (default {DEFAULT_URL})")
    p.add_argument("--nkey", default=None, help=_NKEY_HELP.format(role="adapter"))
    p.add_argument("--symbols", type=int, default=500,
                   help="instruments simulated (default 500)")
    p.add_argument("--venues", default="XNAS,XNYS,BATS", help="comma-separated venue codes")
    p.add_argument("--rate", type=float, default=4000.0, help="ticks per second (default 4000)")
    p.add_argument("--burst-factor", type=float, default=10.0,
                   help="rate multiplier during a burst (default 10)")
    p.add_argument("--burst-every", type=float, default=0.0,
                   help="seconds between bursts of burst-factor x rate (0 = none)")
    p.add_argument("--burst-seconds", type=float, default=1.0,
                   help="how long a burst lasts (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed publishes the same market (default 0)")
    for fault in ("duplicate", "reorder", "gap", "malformed"):
        p.add_argument(f"--{fault}", type=float, default=0.0, help=f"{fault} rate per tick 0..1")
    p.add_argument("--count", type=int, default=0, help="stop after this many ticks")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("--record", default="", help="write the ticks to this tape")
    p.add_argument("--replay", default="",
                   help="replay a headerless tick stream (--record's) at --rate instead of "
                        "simulating")
    p.add_argument("--tape", default="", metavar="TAPE",
                   help="replay a tape (xypipe record / xypipe tape make, docs/tapes.md) at its "
                        "own pace times --speed")
    p.add_argument("--speed", default="1x",
                   help="with --tape: 1x (as recorded), 10x, 0.5x ... or max (as fast as NATS "
                        "takes it); default 1x")
    p.add_argument("--stream", default="XY_SRC",
                   help="source stream made sure to exist before the first contract (created "
                        "with xy.src.> and xy.ref.> if missing; default XY_SRC)")
    p.add_argument("--no-stream", action="store_true",
                   help="core NATS only: do not make sure a stream keeps what is published")
    add_log_options(p, level="warning")
    p.set_defaults(func=_cmd_publish)

    t = subparsers.add_parser(
        "tail", help="print (decoded) messages from NATS subjects, or what a gateway's "
                     "WebSocket sends a browser (--ws)")
    t.add_argument("subjects", nargs="*", default=DEFAULT_SUBJECTS,
                   help="NATS subjects (default xy.md.>); with --ws, the groups to subscribe to")
    t.add_argument("--ws", metavar="URL", default=None,
                   help="watch a gateway's WebSocket (ws[s]://HOST:8080/ws) as a browser would, "
                        "through xypipe.client: snapshot then deltas, resume after a drop")
    t.add_argument("--token", default=None,
                   help=f"--ws: the JWT to say hello with (default: ${TOKEN_ENV}; for the demo: "
                        '--token "$(xypipe token)")')
    t.add_argument("--origin", default=None, help="--ws: the Origin header to send")
    t.add_argument("--cafile", default=None,
                   help="--ws with wss://: CA bundle to verify the gateway's certificate with")
    t.add_argument("--url", default=DEFAULT_URL, help=f"NATS URL (default {DEFAULT_URL})")
    t.add_argument("--nkey", default=None, help=_NKEY_HELP.format(role="reader"))
    t.add_argument("--count", type=int, default=0, help="stop after this many messages")
    t.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds")
    t.add_argument("--json", action="store_true", help="print whole messages as JSON")
    t.add_argument("--verify", action="store_true",
                   help="rebuild the books from snapshots + deltas and check every checksum; "
                        "with --ws, print each delta's sequence and checksum verdict")
    t.add_argument("--quiet", action="store_true", help="no per-message lines")
    add_log_options(t, level="warning")
    t.set_defaults(func=_cmd_tail)


# --------------------------------------------------------------------------- publish


def _cmd_publish(args: argparse.Namespace) -> int:
    from xypipe._config import parse_config

    if args.tape:
        return _publish_tape(args)

    options = {
        "symbols": args.symbols, "venues": [v for v in args.venues.split(",") if v],
        "rate": args.rate, "burst_factor": args.burst_factor,
        "burst_every_s": args.burst_every, "burst_s": args.burst_seconds, "seed": args.seed,
        "duplicate": args.duplicate, "reorder": args.reorder, "gap": args.gap,
        "malformed": args.malformed, "max_ticks": args.count, "record": args.record,
        "replay": args.replay, "source": {"name": args.stream},
        "ensure_stream": not args.no_stream,
    }
    creds = credentials(args.url, args.nkey, "adapter")
    nats: dict[str, object] = {"url": args.url, "inbox_prefix": creds.inbox_prefix}
    if creds.nkey is not None:
        nats["nkey"] = creds.nkey
    cfg = parse_config(
        {"nats": nats, "http": {"enabled": False},
         "pipelines": {"publisher": {"stages": [{"use": "publisher", **options}]}}},
        "xypipe publish",
    )
    total = args.count or None
    what = "publishing"
    if args.replay:
        what = f"replaying {args.replay}"
    with progress(what, total=total, unit="ticks") as bar:
        if args.replay and bar.enabled and not total:
            from xypipe._publisher import read_tape

            bar.update(completed=0, total=sum(1 for _ in read_tape(args.replay)))
        summary = trio.run(_publish, cfg, args.duration, bar)
    print(json.dumps(summary))
    return 0


def _publish_tape(args: argparse.Namespace) -> int:
    from xypipe._errors import UsageError
    from xypipe._tape import parse_speed, read_tape

    if args.replay or args.record:
        raise UsageError("publish: expected --tape alone, not with --replay or --record")
    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        raise UsageError(f"publish --speed: {exc}") from None
    tape = read_tape(args.tape)
    with progress(f"replaying {args.tape} at {args.speed}", total=len(tape),
                  unit="msgs") as bar:
        sent = trio.run(_replay_tape, args, tape, speed, bar)
    print(json.dumps({"tape": args.tape, "published": sent, "speed": args.speed}))
    return 0


async def _replay_tape(args: argparse.Namespace, tape: Tape, speed: float | None,
                       bar: Bar) -> int:
    from xypipe._nats import connect
    from xypipe._stages._srcstream import SourceStream
    from xypipe._tape import replay_tape

    creds = credentials(args.url, args.nkey, "adapter")
    async with connect(args.url, name="xypipe-publish", nkeys_seed=creds.nkey,
                       inbox_prefix=creds.inbox_prefix) as nc:
        if not args.no_stream:
            # As the publisher stage does: the stream keeps the first contracts even when the
            # aggregator starts later.
            await SourceStream(args.stream).ensure(nc.jetstream(), owner=False, log=_log)
        return await replay_tape(nc, tape, speed, on_sent=lambda n: bar.update(completed=n))


async def _publish(cfg: AppConfig, duration: float, bar: Bar) -> dict[str, object]:
    from xypipe._runner import Runner
    from xypipe._stages.publisher import Publisher

    runner = Runner(cfg)

    async def stop_later() -> None:
        await trio.sleep(duration)
        runner.stop()

    async def show_progress() -> None:
        publisher = runner.stage("publisher", "publisher", Publisher)
        while True:
            bar.update(completed=publisher.truth.ticks)
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:

        async def run_then_stop(task_status: trio.TaskStatus[Runner]) -> None:
            await runner.run(task_status=task_status)
            nursery.cancel_scope.cancel()

        if duration:
            nursery.start_soon(stop_later)
        await nursery.start(run_then_stop)
        if bar.enabled:
            nursery.start_soon(show_progress)
    publisher = runner.stage("publisher", "publisher", Publisher)
    bar.update(completed=publisher.truth.ticks)
    return {"ticks": publisher.truth.ticks, "symbols": len(publisher.truth.last),
            "faults": attrs.asdict(publisher.faults)}


# --------------------------------------------------------------------------- tail


def _decoder_for(subject: str) -> type[Message] | None:
    if subject.startswith("xy.md.tick."):
        return Delta
    if subject.startswith("xy.md.snapshot."):
        return Snapshot
    if subject.startswith("xy.src.tick."):
        return Tick
    if subject.startswith("xy.ref.contract."):
        return Contract
    if subject.startswith("xy.agg.seq."):
        return Delta
    return None


def describe(subject: str, msg: Message) -> str:
    """One line about a decoded message."""
    if isinstance(msg, Delta):
        merged = f" first_seq={msg.first_seq}" if msg.first_seq else ""
        return (f"{subject}  delta {msg.group}/{msg.shard} seq={msg.seq}{merged} "
                f"epoch={msg.epoch} level={msg.level} window={msg.window_ms}ms "
                f"symbols={len(msg.symbols)}")
    if isinstance(msg, Snapshot):
        seqs = ",".join(f"{k}:{v}" for k, v in sorted(msg.shard_seq.items()))
        top = ",".join(t.symbol for t in msg.top[:5])
        return (f"{subject}  snapshot {msg.group} v{msg.version} epoch={msg.epoch} "
                f"shard_seq={{{seqs}}} symbols={len(msg.symbols)} "
                f"source_seq={msg.source_stream_seq} top({msg.top_by})={top}")
    if isinstance(msg, Tick):
        return (f"{subject}  tick seq={msg.seq} last={msg.last} vol={msg.vol} oi={msg.oi} "
                f"flags={msg.flags} levels={len(msg.bids)}/{len(msg.asks)}")
    if isinstance(msg, Contract):
        return f"{subject}  contract group={msg.group} priority={msg.priority} v{msg.version}"
    return subject


def _cmd_tail(args: argparse.Namespace) -> int:
    if args.ws is not None:
        groups = [] if args.subjects == DEFAULT_SUBJECTS else list(args.subjects)
        return tail_ws(args, groups)
    code: int = trio.run(_tail, args)
    return code


async def _tail(args: argparse.Namespace) -> int:
    from xypipe._md.client import MarketView
    from xypipe._nats import connect

    view = MarketView() if args.verify else None
    seen = 0
    bad = 0
    done = trio.Event()

    async def follow(nc: NatsClient, subject: str,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal seen, bad
        async with nc.subscribe(subject, max_batch=512) as sub:
            task_status.started()
            async for batch in sub:
                for m in batch:
                    cls = _decoder_for(m.subject)
                    msg: Message | None = None
                    if cls is not None:
                        try:
                            msg = decode(cls, m.data, where=f"subject {m.subject}")
                        except ContractError as exc:
                            bad += 1
                            print(f"[{CLI_TAIL_UNDECODABLE}] {exc}", file=sys.stderr)
                    if view is not None and isinstance(msg, Snapshot):
                        view.apply_snapshot(msg)
                    elif view is not None and isinstance(msg, Delta) and \
                            m.subject.startswith("xy.md.tick."):
                        view.apply_delta(msg)
                    if not args.quiet:
                        if msg is None:
                            print(f"{m.subject}  {len(m.data)} bytes")
                        elif args.json:
                            print(json.dumps({"subject": m.subject, "message": MessageToDict(msg)}))
                        else:
                            print(describe(m.subject, msg))
                    seen += 1
                    if args.count and seen >= args.count:
                        done.set()
                        return

    creds = credentials(args.url, args.nkey, "reader")
    async with connect(args.url, name="xypipe-tail", nkeys_seed=creds.nkey,
                       inbox_prefix=creds.inbox_prefix) as nc, \
            trio.open_nursery() as nursery:
        for subject in args.subjects:
            await nursery.start(follow, nc, subject)
        with trio.move_on_after(args.seconds or float("inf")):
            await done.wait()
        nursery.cancel_scope.cancel()
    if view is not None:
        s = view.stats
        print(json.dumps({"messages": seen, "snapshots": s.snapshots, "deltas": s.deltas,
                          "skipped_before_snapshot": s.skipped, "gaps": s.gaps,
                          "repeats": s.repeats, "epoch_changes": s.epoch_changes,
                          "rejected": s.rejected,
                          "checksums_verified": s.verified, "trimmed": s.trimmed,
                          "checksum_mismatches": s.checksum_mismatches,
                          "problems": s.problems[:10]}))
        return 1 if (s.gaps or s.repeats or s.checksum_mismatches or bad) else 0
    return 1 if bad else 0
