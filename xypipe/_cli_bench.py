"""``xypipe bench replay``: the replay benchmark and its SLO gates, from a checkout.

::

    xypipe bench replay [TAPE] --quick --slo "e2e_p99<180ms,recovery<3s"
    xypipe bench replay --help            # every option (bench/replay.py's)
    xypipe bench curves --quick           # scaling curves (bench/curves.py)

The harness is ``bench/replay.py`` beside the package (it drives nats-server, ``xypipe run``,
``xypipe publish`` and the load generator as separate processes and reuses bench/'s readers),
so the command runs from a clone (``pip install -e '.[dev]'``), not from a wheel; the spec is
checked here first so a typo fails before anything starts. The exit status is the harness's:
0, 1 when an objective is broken (each named), 2 for a bad spec or argument.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from xypipe._errors import BenchSetupError, SloSpecError
from xypipe._slo import parse_slo

__all__ = ["harness", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks of a checkout (bench/README.md)")
    tools = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    harnesses = [
        ("replay", "replay a tape (or the synthetic market) through the whole path beside the "
                   "peers; --slo gates on the numbers (--help: every option)",
         "[TAPE] --speed --clients --tabs --duration --quick --slo --peer ...", _cmd_replay),
        ("curves", "scaling curves: ingest 1k -> 100k ticks/s, clients 10 -> 1,000, gateway "
                   "workers 1 -> 2; where each budget breaks and which level engages (--help: "
                   "every option)",
         "--quick --rates --clients --workers --slo ...", _cmd_curves),
    ]
    for name, what, args, func in harnesses:
        # add_help off and "+" as the prefix: every option is the harness's own.
        p = tools.add_parser(name, add_help=False, prefix_chars="+", help=what)
        p.add_argument("rest", nargs="*", metavar="ARG",
                       help=f"the harness's arguments: {args} (xypipe bench {name} --help "
                            "lists them)")
        p.set_defaults(func=func)


def harness(name: str = "replay") -> Path:
    """``bench/<name>.py`` of the checkout this package runs from (or the current directory)."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        script = root / "bench" / f"{name}.py"
        if script.is_file():
            return script
    raise BenchSetupError(
        f"xypipe bench {name}: bench/{name}.py not found beside the package nor in the current "
        "directory; the benchmarks run from a clone of the repository (pip install -e '.[dev]')")


def _slo_arg(rest: list[str]) -> str | None:
    for i, a in enumerate(rest):
        if a == "--slo" and i + 1 < len(rest):
            return rest[i + 1]
        if a.startswith("--slo="):
            return a.split("=", 1)[1]
    return None


def _cmd_replay(args: argparse.Namespace) -> int:
    rest: list[str] = list(args.rest)
    try:
        spec = _slo_arg(rest)
        if spec is not None:
            parse_slo(spec)
        script = harness()
    except (SloSpecError, BenchSetupError) as e:
        print(f"{e} [{e.code}]", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *rest])


def _cmd_curves(args: argparse.Namespace) -> int:
    try:
        script = harness("curves")
    except BenchSetupError as e:
        print(f"{e} [{e.code}]", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])
