"""``xypipe tail --ws URL GROUP...``: what a gateway's WebSocket sends a browser, through the
client SDK (:mod:`xypipe.client`) — one line per update, and with ``--verify`` every delta's
sequence and checksum verdict and a summary (exit status 1 if anything was wrong).

::

    xypipe tail --ws ws://127.0.0.1:8080/ws --token "$(xypipe token)" fx rates
    xypipe tail --ws wss://gw.example/ws --cafile ca.pem fx --verify --seconds 30 --quiet

Over the WebSocket the gateway checks every sequence before it forwards anything, so a client
should never meet a gap, a repeat, a rejected delta or a bad checksum: ``--verify`` counts each
one as a failure (``XY-CLI-101``).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys

import attrs
import trio
from google.protobuf.json_format import MessageToDict

import xypipe.client as xc
from xypipe._errors import CLI_TAIL_VERIFY_FAILED, ClientError
from xypipe._log import get_logger
from xypipe.contracts import SymbolState

#: Where the token comes from when ``--token`` is not given.
TOKEN_ENV = "XYPIPE_TOKEN"

_log = get_logger("cli")


def run(args: argparse.Namespace, groups: list[str]) -> int:
    if not groups:
        print("xypipe tail --ws: name the groups to watch, e.g. "
              "xypipe tail --ws ws://127.0.0.1:8080/ws fx rates", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"xypipe tail --ws: no token: give --token or set ${TOKEN_ENV} (for the demo: "
              '--token "$(xypipe token)")', file=sys.stderr)
        return 2
    try:
        context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    except (OSError, ssl.SSLError) as exc:
        print(f"xypipe tail --ws: --cafile {args.cafile}: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = trio.run(_tail, args, groups, token, context)
    except ClientError as exc:
        print(f"xypipe tail: [{exc.code}] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


async def _tail(args: argparse.Namespace, groups: list[str], token: str,
                context: ssl.SSLContext | None) -> int:
    seen = 0
    async with xc.connect(args.ws, token=token, ssl_context=context, origin=args.origin,
                          verify=args.verify, client_name="xypipe-tail") as client:
        await client.subscribe(*groups)
        with trio.move_on_after(args.seconds or float("inf")):
            async for update in client:
                if not args.quiet:
                    if args.json:
                        print(json.dumps(update_json(update)), flush=True)
                    else:
                        print(describe_update(update, verify=args.verify), flush=True)
                if isinstance(update, xc.DeltaApplied | xc.SnapshotApplied):
                    seen += 1
                    if args.count and seen >= args.count:
                        break
        stats = client.statistics()
    if not args.verify:
        return 0
    failures = verify_failures(stats)
    print(json.dumps({"messages": seen, **summary(stats), "failures": failures}))
    if failures:
        _log.warning("the gateway's stream failed verification", code=CLI_TAIL_VERIFY_FAILED,
                     url=args.ws, failures=failures)
        return 1
    return 0


def summary(stats: xc.ClientStatistics) -> dict[str, object]:
    return {"frames": stats.frames, "snapshots": stats.snapshots, "deltas": stats.deltas,
            "applied": stats.applied, "not_applied": stats.skipped,
            "checksums_verified": stats.checksums_verified,
            "checksum_mismatches": stats.checksum_mismatches, "trimmed": stats.trimmed,
            "snapshot_requests": stats.snapshot_requests, "reconnects": stats.reconnects,
            "errors": stats.errors, "bad_frames": stats.bad_frames}


def verify_failures(stats: xc.ClientStatistics) -> dict[str, int]:
    """What a client of a correct gateway never sees (held deltas are not failures: they wait
    for a snapshot the client asked for)."""
    out = {verdict: n for verdict, n in stats.skipped.items() if verdict != "held" and n}
    if stats.checksum_mismatches:
        out["checksum_mismatch"] = stats.checksum_mismatches
    if stats.bad_frames:
        out["bad_frame"] = stats.bad_frames
    return out


def _verdict(mismatches: int, ok: str) -> str:
    return f"  CHECKSUM MISMATCH x{mismatches}" if mismatches else f"  {ok}"


def describe_update(u: xc.Update, *, verify: bool = False) -> str:
    """One line about an update."""
    if isinstance(u, xc.DeltaApplied):
        merged = f" first_seq={u.first_seq}" if u.first_seq else ""
        removed = f" removed={len(u.removed)}" if u.removed else ""
        replayed = " (replayed after its snapshot)" if u.replayed else ""
        check = _verdict(u.checksum_mismatches, "seq ok, checksums ok") if verify else ""
        return (f"delta {u.group}/{u.shard} seq={u.seq}{merged} epoch={u.epoch} level={u.level} "
                f"symbols={len(u.symbols)}{removed}{replayed}{check}")
    if isinstance(u, xc.DeltaSkipped):
        return (f"delta {u.group}/{u.shard} seq={u.seq} epoch={u.epoch}  NOT APPLIED: "
                f"{u.verdict}")
    if isinstance(u, xc.SnapshotApplied):
        seqs = ",".join(f"{k}:{v}" for k, v in u.shard_seq)
        resync = " (resync)" if u.resync else ""
        check = _verdict(u.checksum_mismatches, "checksums ok") if verify else ""
        return (f"snapshot {u.group} v{u.version} epoch={u.epoch} shard_seq={{{seqs}}} "
                f"symbols={u.symbols}{resync}{check}")
    if isinstance(u, xc.Connected):
        return (f"connected session={u.session_id} principal={u.principal} "
                f"heartbeat={u.heartbeat_ms}ms reconnects={u.reconnects} "
                f"resumed={','.join(u.resumed) or '-'} subscribed={','.join(u.subscribed) or '-'}")
    if isinstance(u, xc.Subscribed):
        return f"subscribed {','.join(u.groups)}"
    if isinstance(u, xc.SnapshotRequested):
        return f"snapshot requested for {u.group}: {u.reason}"
    if isinstance(u, xc.Degraded):
        paused = f" paused={','.join(u.paused_groups)}" if u.paused_groups else ""
        return f"degraded to L{int(u.level)}: {u.reason} (recovery: {u.recovery}){paused}"
    if isinstance(u, xc.ErrorReceived):
        where = f" {u.group}" if u.group else ""
        return f"error {u.name}{where}{' (fatal)' if u.fatal else ''}: {u.message}"
    if isinstance(u, xc.Disconnected):
        return f"disconnected ({u.close_code}): {u.reason}; reconnecting in {u.retry_in_s:.2f} s"
    if isinstance(u, xc.TokenRefreshed):
        return f"token refreshed, expires at {u.token_expires_us} us"
    if isinstance(u, xc.BadFrame):
        return f"bad frame: {u.reason}"
    if isinstance(u, xc.MoveRequested):
        return f"asked to move (GoAway): {u.reason}; reconnecting at once"
    return f"frame of {len(u.data)} bytes"


def update_json(u: xc.Update) -> dict[str, object]:
    """An update as a JSON object: ``{"update": "DeltaApplied", ...its fields}``."""
    fields = attrs.asdict(u, recurse=False)
    out: dict[str, object] = {"update": type(u).__name__}
    for name, value in fields.items():
        if isinstance(value, tuple) and value and isinstance(value[0], SymbolState):
            out[name] = [MessageToDict(s) for s in value]
        elif isinstance(value, bytes):
            out[name] = len(value)
        else:
            out[name] = value
    return out
