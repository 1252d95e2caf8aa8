"""Progress of long command line operations, drawn by rich on a terminal, silent elsewhere.

::

    with progress("replaying bench/data/market.tape", total=200_000, unit="ticks") as bar:
        bar.update(completed=ticks)         # a count (a bar when the total is known)

    with progress("creds init") as bar:
        init_chain(..., progress=bar.step)  # named steps: each one done is kept as a line

It goes to stderr, so what a command prints on stdout stays machine-readable, and draws nothing
when stderr is not a terminal (a pipe, a log file, CI): there, a command's result line says
what was done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["Bar", "progress"]


class Bar:
    """One operation's progress (see :func:`progress`)."""

    def __init__(self, drawn: Progress, task: TaskID, description: str) -> None:
        self._drawn = drawn
        self._task = task
        self._description = description
        self._step: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is drawn (stderr is a terminal)."""
        return not self._drawn.disable

    def update(self, *, completed: float, total: float | None = None) -> None:
        self._drawn.update(self._task, completed=completed, total=total)  # None: unchanged

    def advance(self, n: float = 1) -> None:
        self._drawn.advance(self._task, n)

    def step(self, text: str) -> None:
        """A new step begins: the one before is kept on screen as done."""
        self._finish_step()
        self._step = text
        self._drawn.update(self._task, description=f"{self._description}: {text}")

    def _finish_step(self) -> None:
        if self._step is not None and self.enabled:
            self._drawn.console.print(f"[green]✓[/green] {self._step}", highlight=False)
        self._step = None


@contextmanager
def progress(description: str, *, total: float | None = None, unit: str = "",
             stream: TextIO | None = None) -> Iterator[Bar]:
    """A progress display for the ``with`` block: counted in ``unit`` (a bar when ``total`` is
    known), or — without a unit — named steps and a spinner. ``stream`` (default: stderr)
    decides whether it is drawn."""
    console = Console(file=stream, stderr=stream is None)
    columns: list[str | ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
    if unit:
        columns += [BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal,
                  transient=False) as drawn:
        bar = Bar(drawn, drawn.add_task(description, total=total), description)
        yield bar
        bar._finish_step()
