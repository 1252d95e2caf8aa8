"""Folding repeated log lines: the same warning written dozens of times becomes a few lines and
one summary that counts the rest.

A sans-I/O core: :class:`RepeatFolder` is fed ``(key, now)`` and answers with what to write —
the line or not, and the summaries of windows that have closed — so it is tested with a fake
clock and used by the log handler (:mod:`xypipe._log`) with whatever clock it is given.

The rule, per key (logger, level, code, message — not the other fields, which vary):
the first line opens a window of ``window_s`` seconds; the first ``limit`` lines in it are
written, the rest are *folded*; when the window has closed, one summary says how many were
folded ("… repeated 37 more times in 10 s"). Nothing is dropped silently: every folded line is
counted in a summary, and :meth:`RepeatFolder.drain` hands out the open ones at shutdown.
"""

from __future__ import annotations

import attrs

from xypipe._validate import in_range

__all__ = ["RepeatFolder", "RepeatKey", "RepeatPolicy", "RepeatStatistics", "Summary", "Verdict"]


@attrs.frozen
class RepeatPolicy:
    #: Lines of one kind written per window; the rest are folded into the window's summary.
    limit: int = attrs.field(default=5, validator=in_range(1, 1_000_000))
    #: How long a window lasts, in seconds; 0 writes every line (no folding).
    window_s: float = attrs.field(default=10.0, validator=in_range(0.0, 86_400.0))

    @property
    def enabled(self) -> bool:
        return self.window_s > 0


@attrs.frozen
class RepeatKey:
    """What makes two lines "the same": where they come from, how bad, which code, what text."""

    logger: str
    level: int
    code: str
    msg: str


@attrs.frozen
class Summary:
    """``folded`` lines of ``key`` were not written in the window opened at ``opened``."""

    key: RepeatKey
    folded: int
    opened: float
    window_s: float


@attrs.frozen
class Verdict:
    """What to do with one line: write it or not, after writing ``summaries`` (closed windows)."""

    write: bool
    summaries: tuple[Summary, ...] = ()


@attrs.frozen
class RepeatStatistics:
    open_windows: int
    #: Lines folded so far (each is counted in a summary, written or still open).
    folded_total: int
    summaries_total: int
    #: Lines written unfolded because ``max_keys`` windows were already open.
    untracked_total: int


@attrs.define
class _Window:
    opened: float
    seen: int = 0
    folded: int = 0


class RepeatFolder:
    """Decides which repeated lines to write; no clock of its own (``now`` is given)."""

    def __init__(self, policy: RepeatPolicy, *, max_keys: int = 1024) -> None:
        self.policy = policy
        self._max_keys = max_keys
        # Insertion order is opening order: a closed window is removed, a new one appended,
        # so the windows that close first are always at the front.
        self._windows: dict[RepeatKey, _Window] = {}
        self._folded_total = 0
        self._summaries_total = 0
        self._untracked_total = 0

    def feed(self, key: RepeatKey, now: float) -> Verdict:
        """A line of ``key`` at ``now``: write it, or fold it into its window's count."""
        if not self.policy.enabled:
            return Verdict(True)
        summaries = tuple(self.due(now))
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._untracked_total += 1
                return Verdict(True, summaries)
            window = self._windows[key] = _Window(opened=now)
        window.seen += 1
        if window.seen <= self.policy.limit:
            return Verdict(True, summaries)
        window.folded += 1
        self._folded_total += 1
        return Verdict(False, summaries)

    def due(self, now: float) -> list[Summary]:
        """The summaries of every window closed by ``now`` (windows without folds end quietly)."""
        out: list[Summary] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now < window.opened + self.policy.window_s:
                break
            del self._windows[key]
            if window.folded:
                out.append(self._summary(key, window))
        return out

    def drain(self) -> list[Summary]:
        """The summaries of every open window, closed now (at shutdown: nothing stays uncounted)."""
        out = [self._summary(k, w) for k, w in self._windows.items() if w.folded]
        self._windows.clear()
        return out

    def next_due(self) -> float | None:
        """When the next window closes, or None when none is open."""
        for window in self._windows.values():
            return window.opened + self.policy.window_s
        return None

    def statistics(self) -> RepeatStatistics:
        return RepeatStatistics(
            open_windows=len(self._windows), folded_total=self._folded_total,
            summaries_total=self._summaries_total, untracked_total=self._untracked_total)

    def _summary(self, key: RepeatKey, window: _Window) -> Summary:
        self._summaries_total += 1
        return Summary(key=key, folded=window.folded, opened=window.opened,
                       window_s=self.policy.window_s)
