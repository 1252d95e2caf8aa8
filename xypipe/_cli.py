"""The ``xypipe`` command line.

Subcommands live in small modules that expose ``register(subparsers)``; this module only
assembles them, so adding a command never touches the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections.abc import Callable

import trio

from xypipe import _log
from xypipe._config import AppConfig, load_config
from xypipe._errors import ConfigError, PluginError, StageError, XyError, find_in_group

_COMMAND_MODULES: list[str] = [
    # Each module exposes register(subparsers). Keep one line per module.
    "xypipe._gateway._token_cli",
    "xypipe._cli_md",
    "xypipe._cli_creds",
]

_log_cli = _log.get_logger("cli")


def _cmd_check(args: argparse.Namespace) -> int:
    from xypipe._profile import check_profile

    status = 0
    for path in args.config:
        try:
            cfg = load_config(path)
            check_profile(cfg)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        stages = sum(len(p.stages) for p in cfg.pipelines.values())
        print(f"{path}: ok ({len(cfg.pipelines)} pipelines, {stages} stages, "
              f"processes: {', '.join(cfg.process_names())})")
    return status


def _cmd_stages(args: argparse.Namespace) -> int:
    import attrs

    from xypipe._registry import resolve_stage, stage_entry_points
    from xypipe._stage import StageInfo, describe_stage

    found: dict[str, StageInfo | PluginError] = {}
    origin: dict[str, tuple[str, str | None]] = {}
    for name, ep in sorted(stage_entry_points().items()):
        try:
            found[name] = describe_stage(resolve_stage(name))
        except PluginError as exc:
            found[name] = exc
        origin[name] = (ep.value, ep.dist.name if ep.dist else None)
    status = 1 if any(isinstance(v, PluginError) for v in found.values()) else 0
    if args.json:
        doc: dict[str, dict[str, object]] = {}
        for name, info in found.items():
            entry: dict[str, object] = ({"error": str(info)} if isinstance(info, PluginError)
                                        else attrs.asdict(info))
            entry_point, dist = origin[name]
            doc[name] = {**entry, "entry_point": entry_point, "distribution": dist}
        print(json.dumps(doc, indent=2, default=str))
        return status
    for name, info in found.items():
        if isinstance(info, PluginError):
            print(f"{name}  [broken] {info}")
            continue
        role = f"; NATS role {info.nats_role}" if info.nats_role else ""
        needs = f"; requires {', '.join(info.requires)}" if info.requires else ""
        entry_point, dist = origin[name]
        print(f"{name}  ({info.kind}{role}{needs}; {entry_point}, from {dist})")
        if info.summary:
            print(f"    {info.summary}")
        print(f"    takes: {info.takes}; gives: {info.gives}")
        for opt in info.options:
            expects = f"  {opt.expects}" if opt.expects else ""
            print(f"    {opt.name}: {opt.type} = {json.dumps(opt.default, default=str)}"
                  f"{expects}")
    return status


def _cmd_run(args: argparse.Namespace,
             announce: Callable[[AppConfig], None] | None = None) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if announce is not None:
        announce(cfg)
    _log.configure(args.log_level or cfg.log.level)
    try:
        try:
            trio.run(_run_main, cfg, args)
        except BaseExceptionGroup as group:
            # Nurseries wrap errors; report ours plainly, let anything else show in full.
            found = find_in_group(group, XyError)
            if found is None:
                raise
            raise found from None
    except StageError as exc:
        _log_cli.error("stopped: a stage failed", code=exc.code, error=str(exc))
        print(f"xypipe: {exc}", file=sys.stderr)
        return 1
    except XyError as exc:
        _log_cli.error("stopped", code=exc.code, error=str(exc))
        print(f"xypipe: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_main(cfg: AppConfig, args: argparse.Namespace) -> None:
    from xypipe._supervisor import run_process_tree

    await run_process_tree(cfg, process=args.process, nats_url=args.nats_url,
                           nats_nkey=args.nats_nkey, signals=(signal.SIGINT, signal.SIGTERM))


def page_urls(cfg: AppConfig) -> list[str]:
    """Where the demo page of each ``ui_server`` stage of ``cfg`` is served (fixed ports only:
    port 0 is picked at start)."""
    from xypipe._stages.ui_server import UiServerConfig

    urls = []
    for pipeline in cfg.pipelines.values():
        for stage in pipeline.stages:
            ui = stage.config
            if isinstance(ui, UiServerConfig) and ui.port:
                host = "localhost" if ui.host in ("0.0.0.0", "::") else (
                    f"[{ui.host}]" if ":" in ui.host else ui.host)
                urls.append(f"http://{host}:{ui.port}/")
    return urls


def _announce_page(cfg: AppConfig) -> None:
    # The first line a person sees, before any log line: where to look.
    for url in page_urls(cfg):
        print(f"xypipe demo: open {url} in a browser (Ctrl-C stops the demo)", flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    args.config = args.config or "configs/demo.toml"
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
        print("xypipe dev proto: run it from a checkout of xypipe (scripts/gen_proto.sh)",
              file=sys.stderr)
        return 2
    cmd = ["bash", str(script), *(["--check"] if args.check else [])]
    return subprocess.run(cmd, check=False).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xypipe", description="Trio pipelines for real-time market data"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the pipelines a config declares")
    p.add_argument("config")
    p.add_argument("--process", default=None,
                   help="run only this process's pipelines (used by the supervisor)")
    p.add_argument("--nats-url", default=None, help="override [nats].url (used by the supervisor)")
    p.add_argument("--nats-nkey", default=None,
                   help="file with the NKey seed to sign in to the embedded bus with (used by "
                        "the supervisor: each process as its role)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run configs/demo.toml: embedded NATS, pipelines, UI")
    p.add_argument("config", nargs="?", default=None)
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("check", help="validate configs without running them")
    p.add_argument("config", nargs="+")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("stages", help="list available stages and their options")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stages)

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="dev", required=True)
    p = dev.add_parser("proto", help="regenerate code from proto/ (Python, JS, Go)")
    p.add_argument("--check", action="store_true", help="fail if generated code is stale")
    p.set_defaults(func=_cmd_dev_proto)

    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log.configure(getattr(args, "log_level", None) or "info")
    result: int = args.func(args)
    return result
