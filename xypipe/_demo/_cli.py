"""The ``xypipe demo`` actions: ``up``, ``down``, ``publisher``, ``observe``, ``smoke``.

``xypipe demo [CONFIG]`` alone runs the demo in the foreground (what ``make demo`` does; see
``xypipe._cli``); a first word naming an action runs it instead, parsed here. Every action
works from the directory the demo runs in (a checkout: ``var/nats``, ``var/demo``,
``ui-static`` and ``infra/`` are relative to it). Errors are one line with their code.
"""

from __future__ import annotations

import argparse
import sys

import trio

from xypipe._cli_common import report
from xypipe._demo._extra_publisher import PublisherOptions, start_publisher, stop_publisher
from xypipe._demo._lifecycle import down, up
from xypipe._demo._observe import DEFAULT_TEMPLATE, observe
from xypipe._demo._state import DEFAULT_STATE_DIR, StateDir
from xypipe._errors import DEMO_SMOKE_FAILED, XyError

__all__ = ["ACTIONS", "DEFAULT_CONFIG", "run_action"]

DEFAULT_CONFIG = "configs/demo.toml"
ACTIONS = ("up", "down", "publisher", "observe", "smoke")
SUMMARY = ("up [CONFIG]: start in the background; down [--wipe]: stop everything the demo "
           "started; publisher start|stop: more load; observe: Prometheus on every process; "
           "smoke: check every part")


_PUBLISHER = PublisherOptions()


def _say(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xypipe demo",
        description="The demo in the background. Run from the checkout the demo runs in: "
                    f"its state (pid, logs, URLs) is kept in {DEFAULT_STATE_DIR}/, its NATS data "
                    "where the config says (var/nats).")
    sub = parser.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                       help=f"where the demo's pid files, logs and URLs are kept (default "
                            f"{DEFAULT_STATE_DIR})")
        return p

    p = action("up", "start the demo in the background; return once every process is ready "
                     "and print the URLs to open")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                   help=f"the demo's config (default {DEFAULT_CONFIG})")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for every /healthz to be ready before giving up and "
                        "stopping the demo (default 120)")

    p = action("down", "stop everything `demo up`, `demo publisher` and `demo observe` "
                       "started (NATS last) and check that no process is left")
    p.add_argument("--grace", type=float, default=20.0,
                   help="seconds the demo gets to stop after SIGTERM before what is left is "
                        "killed (default 20)")
    p.add_argument("--wipe", action="store_true",
                   help="then remove the demo's data: its NATS data directory (streams, role "
                        f"keys) and {DEFAULT_STATE_DIR}/ (logs, Prometheus data)")
    p.add_argument("--config", default=None,
                   help="with --wipe and no demo up: the config whose data directory to "
                        f"remove (default {DEFAULT_CONFIG})")

    p = action("publisher", "start or stop one more publisher (xypipe publish, on venues of "
                            "its own) against the running demo")
    p.add_argument("what", choices=["start", "stop"], help="start it, or stop it")
    p.add_argument("--rate", type=float, default=_PUBLISHER.rate,
                   help=f"ticks per second (default {_PUBLISHER.rate:g})")
    p.add_argument("--symbols", type=int, default=_PUBLISHER.symbols,
                   help=f"instruments (default {_PUBLISHER.symbols})")
    p.add_argument("--venues", default=_PUBLISHER.venues,
                   help="comma-separated venue codes, other than the demo publisher's "
                        f"(default {_PUBLISHER.venues})")
    p.add_argument("--seed", type=int, default=_PUBLISHER.seed,
                   help=f"random seed of its market (default {_PUBLISHER.seed})")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for its first tick on the bus (default 30)")

    p = action("observe", "start Prometheus (Debian's package) scraping every process of the "
                          "running demo, with xypipe's rules; `demo down` stops it")
    p.add_argument("--port", type=int, default=9090,
                   help="Prometheus's port on 127.0.0.1 (default 9090)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help=f"the scrape config whose jobs and rules to use (default "
                        f"{DEFAULT_TEMPLATE}); its targets are replaced by the demo's ports")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait until every target is scraped (default 60)")

    p = action("smoke", "check every part of the running demo: each /healthz, the page, "
                        "NATS, and a WebSocket subscription with sequence and checksum "
                        "checks; exit 0 if all pass, 1 if not")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds each check may take (default 20)")
    return parser


def run_action(argv: list[str]) -> int:
    """Run ``xypipe demo ACTION ...``; the exit status."""
    args = _parser().parse_args(argv)
    state = StateDir(args.state_dir)
    name = args.action if args.action != "publisher" else f"publisher {args.what}"
    try:
        return trio.run(_main, args, state)
    except XyError as exc:
        return report(f"xypipe demo {name}", exc)
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, state: StateDir) -> int:
    if args.action == "up":
        await up(args.config, state, timeout_s=args.timeout, say=_say)
    elif args.action == "down":
        await down(state, grace_s=args.grace, wipe=args.wipe, config=args.config, say=_say)
    elif args.action == "publisher" and args.what == "start":
        options = PublisherOptions(args.rate, args.symbols, args.venues, args.seed)
        await start_publisher(state, options, timeout_s=args.timeout, say=_say)
    elif args.action == "publisher":
        await stop_publisher(state, say=_say)
    elif args.action == "observe":
        await observe(state, port=args.port, template=args.template, timeout_s=args.timeout,
                      say=_say)
    else:
        # Only smoke needs the WebSocket client; the other actions start without loading it.
        from xypipe._demo._smoke import smoke

        verdicts = await smoke(state, timeout_s=args.timeout)
        for v in verdicts:
            _say(v.line())
        failed = [v for v in verdicts if not v.ok]
        if failed:
            print(f"xypipe demo smoke: {len(failed)} of {len(verdicts)} checks failed "
                  f"[{DEMO_SMOKE_FAILED}]", file=sys.stderr)
            return 1
        _say(f"xypipe demo smoke: all {len(verdicts)} checks passed")
    return 0
