"""``xypipe record`` (NATS -> tape) and ``xypipe tape make|info|deltas`` (docs/tapes.md).

::

    xypipe record 'xy.src.tick.>' 'xy.ref.contract.>' --to market.tape --duration 10
    xypipe tape make --to bench/data/demo-market.tape --seed 1 --rate 4000 --duration 2
    xypipe tape info bench/data/demo-market.tape
    xypipe tape deltas bench/data/demo-market.tape --out deltas.tape [--config configs/demo.toml]
    xypipe publish --tape bench/data/demo-market.tape --speed 10x      # replay onto NATS

``record`` signs in like ``xypipe tail`` (the ``reader`` role of the embedded demo when run
from its directory, else ``--nkey``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TypeVar

import attrs
import trio

from xypipe._cli_common import add_log_options
from xypipe._cli_md import _NKEY_HELP, DEFAULT_URL, credentials
from xypipe._errors import TAPE_NOT_CLOSED, TAPE_RECORDED_NOTHING, TAPE_RECORDS_SKIPPED, UsageError
from xypipe._log import get_logger
from xypipe._progress import progress

if TYPE_CHECKING:
    from xypipe._tape import TapeHeader
    from xypipe._tape_deltas import ReplayConfig

C = TypeVar("C")
DEFAULT_RECORD_SUBJECTS = ["xy.src.tick.>", "xy.ref.contract.>"]
_log = get_logger("cli")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = subparsers.add_parser(
        "record", help="record NATS messages (raw ticks, reference data) with their timing "
                       "into a tape")
    r.add_argument("subjects", nargs="*", default=DEFAULT_RECORD_SUBJECTS,
                   help="NATS subjects to record (default: xy.src.tick.> xy.ref.contract.>)")
    r.add_argument("--to", required=True, metavar="TAPE", help="the tape file to write")
    stop = r.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: Ctrl-C)")
    stop.add_argument("--count", type=int, default=0, help="stop after this many messages")
    r.add_argument("--url", "--nats-url", default=DEFAULT_URL,
                   help=f"NATS URL (default {DEFAULT_URL})")
    r.add_argument("--nkey", default=None, help=_NKEY_HELP.format(role="reader"))
    add_log_options(r, level="warning")
    r.set_defaults(func=_cmd_record)

    t = subparsers.add_parser("tape", help="make, inspect and replay tapes (docs/tapes.md)")
    sub = t.add_subparsers(dest="tape_command", required=True, metavar="ACTION")

    m = sub.add_parser("make", help="write the synthetic market of a seed as a tape (no NATS)")
    m.add_argument("--to", required=True, metavar="TAPE", help="the tape file to write")
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    m.add_argument("--rate", type=float, default=4000.0, help="ticks per second (default 4000)")
    m.add_argument("--duration", type=float, default=3.0, help="seconds of market (default 3)")
    m.add_argument("--symbols", type=int, default=500, help="instruments (default 500)")
    m.add_argument("--venues", default="XNAS,XNYS,BATS", help="comma-separated venue codes")
    for fault in ("duplicate", "reorder", "gap", "malformed"):
        m.add_argument(f"--{fault}", type=float, default=0.0, help=f"{fault} rate per tick 0..1")
    m.add_argument("--start-us", type=int, default=None,
                   help="wall-clock microseconds of the tape's start (default 2026-01-01T00:00Z: "
                        "the file is a pure function of the options)")
    m.set_defaults(func=_cmd_make)

    i = sub.add_parser("info", help="check a tape and print its header and counts (JSON)")
    i.add_argument("tape", help="the tape file")
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser(
        "deltas", help="run a tape through the aggregator's cores on the tape's own clock and "
                       "write the deltas and snapshots (deterministic: same tape, same bytes)")
    d.add_argument("tape", help="the tape file")
    d.add_argument("--out", required=True, metavar="DELTAS",
                   help="where to write the deltas and snapshots (a tape of xy.md.* messages)")
    d.add_argument("--config", default=None,
                   help="take the dedupe/shard/conflate/snapshot/ingest settings of this "
                        "config's aggregator pipeline (default: each stage's defaults)")
    d.set_defaults(func=_cmd_deltas)


# --------------------------------------------------------------------------- record


def _cmd_record(args: argparse.Namespace) -> int:
    if args.count < 0 or (args.duration is not None and args.duration <= 0):
        raise UsageError("record: expected --count >= 1 or --duration > 0")
    try:
        header = trio.run(_record, args)
    except KeyboardInterrupt:
        # Ctrl-C is how an open-ended recording ends: the writer closed the tape on the way out.
        from xypipe._tape import read_tape

        header = read_tape(args.to).header
    print(json.dumps({"tape": args.to, "records": header.records,
                      "subjects": list(header.subjects)}))
    if not header.records:
        _log.warning("nothing was recorded", code=TAPE_RECORDED_NOTHING,
                     subjects=list(header.subjects), url=args.url)
        return 1
    return 0


async def _record(args: argparse.Namespace) -> TapeHeader:
    from xypipe._nats import connect
    from xypipe._tape import record_tape

    creds = credentials(args.url, args.nkey, "reader")
    result: list[TapeHeader] = []
    with progress(f"recording to {args.to}", total=args.count or None, unit="msgs") as bar:
        async with connect(args.url, name="xypipe-record", nkeys_seed=creds.nkey,
                           inbox_prefix=creds.inbox_prefix) as nc:

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
                result.append(await record_tape(
                    nc, args.subjects, args.to, duration=args.duration, count=args.count,
                    source=f"xypipe record {args.url}",
                    on_recorded=lambda n: bar.update(completed=n), task_status=task_status))

            async with trio.open_nursery() as nursery:
                await nursery.start(run)
                # Said once every subscription is in place: a script may start publishing.
                print(f"recording {' '.join(args.subjects)} from {args.url} to {args.to}",
                      file=sys.stderr, flush=True)
    return result[0]


# --------------------------------------------------------------------------- tape make / info


def _cmd_make(args: argparse.Namespace) -> int:
    from xypipe._publisher import (
        DEFAULT_TAPE_START_US,
        FaultRates,
        MarketTapeSpec,
        write_market_tape,
    )

    venues = tuple(v for v in args.venues.split(",") if v)
    if not venues or args.symbols < 1 or args.rate < 0 or args.duration <= 0:
        raise UsageError("tape make: expected --venues, --symbols >= 1, --rate >= 0 and "
                         "--duration > 0")
    faults = FaultRates(args.duplicate, args.reorder, args.gap, args.malformed)
    for name, value in attrs.asdict(faults).items():
        if not 0 <= value <= 1:
            raise UsageError(f"tape make: --{name}: expected a rate 0..1, got {value}")
    spec = MarketTapeSpec(seed=args.seed, rate=args.rate, duration_s=args.duration,
                          symbols=args.symbols, venues=venues, faults=faults,
                          start_us=DEFAULT_TAPE_START_US if args.start_us is None
                          else args.start_us)
    header = write_market_tape(args.to, spec)
    print(json.dumps({"tape": args.to, "records": header.records, "seed": header.seed,
                      "source": header.source}))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from xypipe._tape import read_tape

    tape = read_tape(args.tape)
    h = tape.header
    by_prefix: dict[str, int] = {}
    size = 0
    for rec in tape:
        prefix = ".".join(rec.subject.split(".")[:3])
        by_prefix[prefix] = by_prefix.get(prefix, 0) + 1
        size += len(rec.data)
    if not tape.closed:
        _log.warning("the tape was not closed (no record count in its header); read to its end",
                     code=TAPE_NOT_CLOSED, tape=args.tape, records=len(tape))
    print(json.dumps({
        "tape": args.tape, "version": h.version, "created_us": h.created_us,
        "source": h.source, "seed": h.seed, "subjects": list(h.subjects),
        "records": len(tape), "closed": tape.closed, "duration_s": tape.duration_us / 1e6,
        "payload_bytes": size, "by_subject": dict(sorted(by_prefix.items())),
    }))
    return 0


# --------------------------------------------------------------------------- tape deltas


def _cmd_deltas(args: argparse.Namespace) -> int:
    from xypipe._tape import read_tape
    from xypipe._tape_deltas import ReplayConfig, write_deltas

    cfg = ReplayConfig() if args.config is None else replay_config_of(args.config)
    header, stats = write_deltas(args.out, read_tape(args.tape), cfg)
    if stats.bad:
        _log.warning("records of the tape skipped as ingest skips them", code=TAPE_RECORDS_SKIPPED,
                     tape=args.tape, reasons=stats.bad)
    print(json.dumps({"tape": args.tape, "out": args.out, "written": header.records,
                      **attrs.asdict(stats)}))
    return 0


def replay_config_of(path: str) -> ReplayConfig:
    """The :class:`~xypipe._tape_deltas.ReplayConfig` of a config file's aggregator pipeline:
    the settings of its ``ingest`` (bounds), ``dedupe``, ``shard``, ``conflate`` and
    ``snapshot`` stages (the first pipeline that has a ``conflate`` stage)."""
    from xypipe._config import load_config
    from xypipe._stages.conflate import ConflateConfig
    from xypipe._stages.dedupe import DedupeConfig
    from xypipe._stages.ingest import IngestConfig
    from xypipe._stages.shard import ShardConfig
    from xypipe._stages.snapshot import SnapshotConfig
    from xypipe._tape_deltas import ReplayConfig

    app = load_config(path)
    for pipeline in app.pipelines.values():
        configs = {type(s.config): s.config for s in pipeline.stages}
        if ConflateConfig not in configs:
            continue
        ingest = _pick(configs, IngestConfig) or IngestConfig()
        return ReplayConfig(dedupe=_pick(configs, DedupeConfig) or DedupeConfig(),
                            shard=_pick(configs, ShardConfig) or ShardConfig(),
                            conflate=_pick(configs, ConflateConfig) or ConflateConfig(),
                            snapshot=_pick(configs, SnapshotConfig) or SnapshotConfig(),
                            bounds=ingest.bounds)
    raise UsageError(f"tape deltas: --config {path}: expected a pipeline with a conflate stage "
                     f"(the aggregator), found none")


def _pick(configs: dict[type, object], cls: type[C]) -> C | None:
    found = configs.get(cls)
    return found if isinstance(found, cls) else None
