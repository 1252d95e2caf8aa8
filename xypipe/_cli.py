"""The ``xypipe`` command line.

Subcommands live in small modules that expose ``register(subparsers)``; this module only
assembles them, so adding a command never touches the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable

import trio

from xypipe import _log
from xypipe._cli_common import add_log_options, error_lines, report
from xypipe._config import AppConfig
from xypipe._demo._cli import ACTIONS as DEMO_ACTIONS
from xypipe._demo._cli import DEFAULT_CONFIG as DEMO_CONFIG
from xypipe._demo._cli import SUMMARY as DEMO_SUMMARY
from xypipe._demo._cli import run_action as run_demo_action
from xypipe._demo._layout import page_urls
from xypipe._effective import effective_lines
from xypipe._errors import (
    CFG_OVERRIDES_APPLIED,
    CLI_FILE_ERROR,
    ConfigError,
    StageError,
    UsageError,
    XyError,
    find_in_group,
)
from xypipe._gc import tune_for_service
from xypipe._overrides import Effective, load_effective

_COMMAND_MODULES: list[str] = [
    # Each module exposes register(subparsers). Keep one line per module.
    "xypipe._gateway._token_cli",
    "xypipe._cli_md",
    "xypipe._cli_tape",
    "xypipe._cli_creds",
    "xypipe._cli_stages",
    "xypipe._cli_bench",
    "xypipe._cli_rollout",
]

_log_cli = _log.get_logger("cli")


def _cmd_check(args: argparse.Namespace) -> int:
    from xypipe._profile import check_profile

    status = 0
    for path in args.config:
        try:
            eff = load_effective(path, sets=args.set)
        except ConfigError as exc:
            print("\n".join(error_lines(exc)), file=sys.stderr)
            status = 1
            continue
        try:
            check_profile(eff.config)
        except ConfigError as exc:
            exc = eff.explain(exc)
            print("\n".join(error_lines(exc)), file=sys.stderr)
            status = 1
            continue
        if args.effective:
            print("\n".join(effective_lines(eff)))
            continue
        cfg = eff.config
        stages = sum(len(p.stages) for p in cfg.pipelines.values())
        print(f"{path}: ok ({len(cfg.pipelines)} pipelines, {stages} stages, "
              f"processes: {', '.join(_with_workers(cfg, p) for p in cfg.process_names())})"
              + _set_by(eff))
    return status


def _set_by(eff: Effective) -> str:
    """`` set by: XYPIPE_NATS__URL, --set log.level`` (names, never values), or ""."""
    labels = list(dict.fromkeys(ov.label for ov in eff.applied))
    return f"; set by: {', '.join(labels)}" if labels else ""


def _with_workers(cfg: AppConfig, process: str) -> str:
    """A process as ``xypipe check`` lists it: with its effective number of workers when the
    config asks for several or leaves it to "auto" (decided on this machine)."""
    plan = cfg.worker_plan(process)
    if plan.source == "auto":
        return f"{process} (workers: {plan.count}, auto)"
    return f"{process} (workers: {plan.count})" if plan.count > 1 else process


def _cmd_run(args: argparse.Namespace,
             announce: Callable[[AppConfig], None] | None = None) -> int:
    from xypipe._profile import check_profile

    eff = load_effective(args.config, sets=getattr(args, "set", None) or ())
    cfg = eff.config
    try:
        check_profile(cfg)  # again when the tree starts; here to name who set what it refuses
    except ConfigError as exc:
        raise eff.explain(exc) from None
    if announce is not None:
        announce(cfg)
    _log.configure(args.log_level or cfg.log.level, format=cfg.log.format,
                   repeats=cfg.log.repeats)
    if eff.applied:
        # Which keys, and who set them; never the values (a password may be one).
        _log_cli.info("config keys set over the file", code=CFG_OVERRIDES_APPLIED,
                      keys={_key(ov.path): ov.source for ov in eff.applied})
    # Config read, modules imported: the state of a long-running process from here on.
    tune_for_service()
    try:
        try:
            status = trio.run(_run_main, cfg, args)
        except BaseExceptionGroup as group:
            # Nurseries wrap errors; report ours plainly, let anything else show in full.
            found = find_in_group(group, XyError)
            if found is None:
                raise
            raise found from None
    except StageError as exc:
        _log_cli.error("stopped: a stage failed", code=exc.code, error=str(exc))
        raise
    except XyError as exc:
        _log_cli.error("stopped", code=exc.code, error=str(exc))
        raise
    return status


async def _run_main(cfg: AppConfig, args: argparse.Namespace) -> int:
    from xypipe._supervisor import run_process_tree

    async with trio.open_nursery() as nursery:
        if cfg.log.repeats.enabled:
            nursery.start_soon(_log.summarise_repeats)
        status = await run_process_tree(cfg, process=args.process, nats_url=args.nats_url,
                                        nats_nkey=args.nats_nkey,
                                        signals=(signal.SIGINT, signal.SIGTERM))
        nursery.cancel_scope.cancel()
    return status


def _announce_page(cfg: AppConfig) -> None:
    # The first line a person sees, before any log line: where to look.
    for url in page_urls(cfg):
        print(f"xypipe demo: open {url} in a browser (Ctrl-C stops the demo)", flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.demo_command in DEMO_ACTIONS:
        return run_demo_action([args.demo_command, *args.rest])
    if args.rest:
        raise UsageError(f"unexpected {' '.join(args.rest)!r} after the config (an action "
                         f"comes first: {', '.join(DEMO_ACTIONS)})")
    args.config = args.demo_command or DEMO_CONFIG
    args.process = None
    args.nats_url = None
    args.nats_nkey = None
    return _cmd_run(args, announce=_announce_page)


def _cmd_dev_proto(args: argparse.Namespace) -> int:
    import pathlib
    import subprocess

    root = pathlib.Path.cwd()
    script = root / "scripts" / "gen_proto.sh"
    if not script.exists():
        raise UsageError("run it from a checkout of xypipe (no scripts/gen_proto.sh here)")
    cmd = ["bash", str(script), *(["--check"] if args.check else [])]
    return subprocess.run(cmd, check=False).returncode


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key over the file and the environment, e.g. --set "
                        "processes.gateway.workers=2 (repeatable; a TOML value unless the key "
                        "is a string; docs/operations.md, \"Environment overrides\")")


def _key(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def build_parser() -> argparse.ArgumentParser:
    from xypipe import __version__

    parser = argparse.ArgumentParser(
        prog="xypipe", description="Trio pipelines for real-time market data"
    )
    parser.add_argument("--version", action="version", version=f"xypipe {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the pipelines a config declares")
    p.add_argument("config", help="the TOML config file")
    p.add_argument("--process", default=None,
                   help="run only this process's pipelines (used by the supervisor)")
    p.add_argument("--nats-url", default=None, help="override [nats].url (used by the supervisor)")
    p.add_argument("--nats-nkey", default=None,
                   help="file with the NKey seed to sign in to the embedded bus with (used by "
                        "the supervisor: each process as its role)")
    _add_set_option(p)
    add_log_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run configs/demo.toml: embedded NATS, pipelines, UI",
                       description="xypipe demo [CONFIG] runs the demo in the foreground "
                                   f"(Ctrl-C stops it). xypipe demo ACTION: {DEMO_SUMMARY} "
                                   "(xypipe demo ACTION --help for its options).")
    p.add_argument("demo_command", nargs="?", default=None,
                   metavar="{" + ",".join(DEMO_ACTIONS) + "} | CONFIG",
                   help=f"an action, or the TOML config to run in the foreground (default "
                        f"{DEMO_CONFIG})")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="...",
                   help="the action's own arguments (xypipe demo ACTION --help)")
    add_log_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("check", help="validate configs without running them")
    p.add_argument("config", nargs="+", help="TOML config files (one line per problem)")
    p.add_argument("--effective", action="store_true",
                   help="print each config as it would run: every key, its value (secrets as "
                        "***) and where it came from (command line, env var, file, default)")
    _add_set_option(p)
    p.set_defaults(func=_cmd_check)

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(
        dest="dev", required=True, metavar="TOOL")
    p = dev.add_parser("proto", help="regenerate code from proto/ (Python, TypeScript, JS, Go)")
    p.add_argument("--check", action="store_true", help="fail if generated code is stale")
    p.set_defaults(func=_cmd_dev_proto)

    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _prefix(args: argparse.Namespace) -> str:
    # The service speaks as "xypipe", a tool by its name ("xypipe publish").
    command = getattr(args, "command", None)
    return "xypipe" if command in (None, "run", "demo") else f"xypipe {command}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", None)
    if not log_format:
        return _main(args)
    # The environment, so the processes a supervisor starts log the same way — for this
    # command only (main() is also called in-process, by tests and tools).
    before = os.environ.get(_log.ENV_FORMAT)
    os.environ[_log.ENV_FORMAT] = log_format
    try:
        return _main(args)
    finally:
        if before is None:
            os.environ.pop(_log.ENV_FORMAT, None)
        else:
            os.environ[_log.ENV_FORMAT] = before


def _main(args: argparse.Namespace) -> int:
    prefix = _prefix(args)
    try:
        _log.configure(getattr(args, "log_level", None) or "warning")
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`xypipe stages | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (Exception, BaseExceptionGroup) as exc:
        # Expected failures (ours, mapped at their boundary, or the file system's) are one
        # line with a code; anything else is a bug and shows its traceback.
        found = find_in_group(exc, XyError)
        if found is not None:
            return report(prefix, found)
        os_error = find_in_group(exc, OSError)
        if os_error is not None and not isinstance(os_error, BrokenPipeError):
            return report(prefix, XyError(_os_error_text(os_error), code=CLI_FILE_ERROR))
        if find_in_group(exc, KeyboardInterrupt) is not None:
            return 130
        raise


def _os_error_text(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
