"""``xypipe stages``: the installed stages (entry points of ``xypipe.stages``) and their options.

::

    xypipe stages            # a table of options per stage (rich; plain columns when piped)
    xypipe stages --json     # everything, for tools

Only entry points are listed: the test-only stages of :mod:`xypipe.testing` are used by
``module:Class`` reference and never registered, so a production install shows real stages.
A plugin that fails to load is listed as broken (with its error code) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os

import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from xypipe._errors import PluginError
from xypipe._registry import resolve_stage, stage_entry_points
from xypipe._stage import StageInfo, describe_stage

__all__ = ["register"]

#: How wide the tables may be when stdout is not a terminal (and $COLUMNS does not say).
PIPE_WIDTH = 160
_REQUIRED = "(required)"  # describe_stage's default of an option without one


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stages", help="list the installed stages and their options")
    p.add_argument("--json", action="store_true",
                   help="print every stage as JSON (options, types, entry point, distribution)")
    p.set_defaults(func=_cmd_stages)


@attrs.frozen
class Found:
    name: str
    entry_point: str
    distribution: str | None
    info: StageInfo | PluginError


def installed() -> list[Found]:
    """Every stage entry point, described (or the error that stopped it loading)."""
    out = []
    for name, ep in sorted(stage_entry_points().items()):
        info: StageInfo | PluginError
        try:
            info = describe_stage(resolve_stage(name))
        except PluginError as exc:
            info = exc
        out.append(Found(name, ep.value, ep.dist.name if ep.dist else None, info))
    return out


def _cmd_stages(args: argparse.Namespace) -> int:
    found = installed()
    status = 1 if any(isinstance(f.info, PluginError) for f in found) else 0
    if args.json:
        doc: dict[str, dict[str, object]] = {}
        for f in found:
            entry: dict[str, object] = (
                {"error": str(f.info), "code": f.info.code} if isinstance(f.info, PluginError)
                else attrs.asdict(f.info))
            doc[f.name] = {**entry, "entry_point": f.entry_point,
                           "distribution": f.distribution}
        print(json.dumps(doc, indent=2, default=str))
        return status
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    for f in found:
        console.print(_heading(f), highlight=False, soft_wrap=True)  # one line, never cut
        if isinstance(f.info, StageInfo):
            console.print(_options(f.info))
        console.print()
    return status


def _heading(f: Found) -> Text:
    text = Text(f.name, style="bold cyan")
    if isinstance(f.info, PluginError):
        text.append(f"  broken: {f.info} [{f.info.code}]", style="bold red")
        return text
    info = f.info
    text.append(f"  {info.kind}", style="magenta")
    if info.nats_role:
        text.append(f"; NATS role {info.nats_role}")
    if info.requires:
        text.append(f"; requires {', '.join(info.requires)}")
    text.append(f"; {f.entry_point}, from {f.distribution}", style="dim")
    if info.summary:
        text.append(f"\n  {info.summary}")
    text.append("\n  takes ", style="dim")
    text.append(info.takes)
    text.append("; gives ", style="dim")
    text.append(info.gives)
    return text


def _options(info: StageInfo) -> Table:
    with_doc = any(o.doc for o in info.options)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
                  header_style="bold")
    table.add_column("  option", style="green", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("default")
    table.add_column("expects")
    if with_doc:
        table.add_column("meaning")
    for o in info.options:
        default = (Text("required", style="bold") if o.default == _REQUIRED
                   else Text(json.dumps(o.default, default=str)))
        # Text, not str: rich would read "list[str]" as markup.
        row = [Text(f"  {o.name}"), Text(o.type), default,
               Text(o.expects.removeprefix("expected "))]
        if with_doc:
            row.append(Text(o.doc))
        table.add_row(*row)
    return table
