"""The dedupe/reorder window: unit cases and properties over any bounded disorder."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xypipe._md.reorder import ReorderWindow


class R:
    __slots__ = ("key", "seq", "sseq")

    def __init__(self, key: str, seq: int, sseq: int = 0) -> None:
        self.key, self.seq, self.sseq = key, seq, sseq

    def __repr__(self) -> str:
        return f"{self.key}#{self.seq}"


def run(window: ReorderWindow, arrivals: list[tuple[float, R]], end: float) -> list[R]:
    out: list[R] = []
    for t, r in arrivals:
        window.expire(t, out)
        window.push(r, t, out)
    window.expire(end, out)
    return out


def seqs(out: list[Any], key: str = "A") -> list[int]:
    return [r.seq for r in out if r.key == key]


def test_in_order_ticks_pass_straight_through() -> None:
    w = ReorderWindow(0.02, 8)
    out = run(w, [(0.0, R("A", i)) for i in range(1, 6)], 1.0)
    assert seqs(out) == [1, 2, 3, 4, 5]
    assert (w.duplicates, w.reordered, w.gaps) == (0, 0, 0)


def test_duplicate_seq_is_dropped_and_counted() -> None:
    w = ReorderWindow(0.02, 8)
    out = run(w, [(0.0, R("A", 1)), (0.0, R("A", 2)), (0.0, R("A", 2)), (0.0, R("A", 1))], 1.0)
    assert seqs(out) == [1, 2]
    assert w.duplicates == 2


class T(R):
    """A record with an exchange timestamp (equal to 100 x its sequence unless given)."""

    __slots__ = ("ts",)

    def __init__(self, key: str, seq: int, ts: int | None = None) -> None:
        super().__init__(key, seq)
        self.ts = 100 * seq if ts is None else ts


def test_a_source_that_starts_over_at_1_is_followed_not_dropped() -> None:
    w = ReorderWindow(0.02, 8, stamp=lambda r: r.ts)
    w.restore({"A": 500}, {"A": 50_000})  # a snapshot from before the publisher restarted
    out = run(w, [(0.0, T("A", i, ts=60_000 + i)) for i in range(1, 5)], 1.0)
    assert seqs(out) == [1, 2, 3, 4]
    assert (w.resets, w.duplicates) == (1, 0)


def test_a_late_duplicate_of_seq_1_keeps_its_old_timestamp_and_is_dropped() -> None:
    w = ReorderWindow(0.02, 1, stamp=lambda r: r.ts)
    out = run(w, [(0.0, T("A", i)) for i in (1, 2, 3, 4, 5, 1)], 1.0)
    assert seqs(out) == [1, 2, 3, 4, 5]
    assert (w.resets, w.duplicates) == (0, 1)


def test_out_of_order_tick_is_held_and_released_in_order() -> None:
    w = ReorderWindow(0.02, 8)
    out: list[R] = []
    w.push(R("A", 1), 0.0, out)
    w.push(R("A", 3), 0.001, out)
    assert seqs(out) == [1]
    assert w.next_deadline() == 0.021
    w.push(R("A", 2), 0.002, out)
    assert seqs(out) == [1, 2, 3]
    assert (w.reordered, w.gaps, w.held_count) == (1, 0, 0)


def test_gap_the_window_cannot_close_is_counted_and_the_stream_moves_on() -> None:
    w = ReorderWindow(0.02, 8)
    out: list[R] = []
    w.push(R("A", 1), 0.0, out)
    w.push(R("A", 4), 0.001, out)
    w.push(R("A", 5), 0.002, out)
    w.expire(0.020, out)
    assert seqs(out) == [1]
    w.expire(0.021, out)
    assert seqs(out) == [1, 4, 5]
    assert (w.gaps, w.gap_missing) == (1, 2)
    w.push(R("A", 2), 0.03, out)  # too late now
    assert seqs(out) == [1, 4, 5]
    assert w.duplicates == 1


def test_a_full_window_gives_up_at_once() -> None:
    w = ReorderWindow(10.0, 2)
    out: list[R] = []
    for s in (1, 3, 4, 5):
        w.push(R("A", s), 0.0, out)
    assert seqs(out) == [1, 3, 4, 5]
    assert w.gaps == 1


def test_first_tick_above_one_is_held_so_an_early_reorder_is_fixed() -> None:
    w = ReorderWindow(0.02, 8)
    out = run(w, [(0.0, R("A", 11)), (0.001, R("A", 10))], 1.0)
    assert seqs(out) == [10, 11]
    assert w.gaps == 0


def test_restored_sequences_drop_what_the_snapshot_already_holds() -> None:
    w = ReorderWindow(0.02, 8)
    w.restore({"A": 7})
    out = run(w, [(0.0, R("A", 6)), (0.0, R("A", 7)), (0.0, R("A", 8))], 1.0)
    assert seqs(out) == [8]
    assert w.duplicates == 2


def test_min_held_sseq_is_the_lowest_stream_sequence_waiting() -> None:
    w = ReorderWindow(0.02, 8)
    out: list[R] = []
    w.push(R("A", 1, sseq=1), 0.0, out)
    w.push(R("A", 3, sseq=5), 0.0, out)
    w.push(R("B", 1, sseq=6), 0.0, out)
    w.push(R("B", 4, sseq=7), 0.0, out)
    assert w.min_held_sseq() == 5
    w.flush(out)
    assert w.min_held_sseq() is None


# ------------------------------------------------------------------------ properties


@st.composite
def disordered(draw: Any, max_disp: int = 4) -> tuple[list[tuple[float, R]], dict[str, list[int]],
                                                       int]:
    """Several keys' sequences with duplicates and bounded displacement, interleaved."""
    keys = draw(st.lists(st.sampled_from("ABCD"), min_size=1, max_size=4, unique=True))
    stream: list[tuple[float, str, int]] = []
    expected: dict[str, list[int]] = {}
    dups = 0
    for k in keys:
        n = draw(st.integers(1, 30))
        expected[k] = list(range(1, n + 1))
        items = []
        for i in range(1, n + 1):
            items.append((i + draw(st.integers(0, max_disp)) + 0.5, i))
            if draw(st.integers(0, 9)) == 0:
                dups += 1
                items.append((i + draw(st.integers(0, max_disp)) + 0.7, i))
        items.sort()
        stream.extend((pos, k, s) for pos, s in items)
    # Interleave keys: each key's relative order is kept by a stable sort on a random slot.
    slots = draw(st.lists(st.floats(0, 1), min_size=len(stream), max_size=len(stream)))
    order = sorted(range(len(stream)), key=lambda i: (stream[i][0] + slots[i], i))
    # Keep each key's own disorder exactly as generated.
    per_key: dict[str, list[int]] = {}
    for i in range(len(stream)):
        per_key.setdefault(stream[i][1], []).append(stream[i][2])
    cursor = {k: 0 for k in per_key}
    arrivals = []
    for t, i in enumerate(order):
        k = stream[i][1]
        s = per_key[k][cursor[k]]
        cursor[k] += 1
        arrivals.append((t * 0.001, R(k, s)))
    return arrivals, expected, dups


@settings(max_examples=200, deadline=None)
@given(disordered())
def test_any_bounded_disorder_comes_out_strictly_increasing_with_nothing_lost(
    case: tuple[list[tuple[float, R]], dict[str, list[int]], int],
) -> None:
    arrivals, expected, dups = case
    w = ReorderWindow(hold=10.0, max_held=64)
    out = run(w, arrivals, end=0.0)
    w.flush(out)
    for k, want in expected.items():
        assert seqs(out, k) == want
    assert w.duplicates == dups
    assert w.gaps == 0


@settings(max_examples=200, deadline=None)
@given(disordered(max_disp=8), st.sampled_from([0.0, 0.002, 0.005]), st.integers(1, 4),
       st.sets(st.integers(0, 400), max_size=20))
def test_with_gaps_and_short_windows_output_stays_strictly_increasing(
    case: tuple[list[tuple[float, R]], dict[str, list[int]], int], hold: float, max_held: int,
    lost: set[int],
) -> None:
    arrivals, _, _ = case
    arrivals = [a for i, a in enumerate(arrivals) if i not in lost]
    w = ReorderWindow(hold=hold, max_held=max_held)
    out = run(w, arrivals, end=arrivals[-1][0] + 1 if arrivals else 1.0)
    w.flush(out)
    released = {(r.key, r.seq) for r in out}
    for k in "ABCD":
        got = seqs(out, k)
        assert got == sorted(set(got)), f"{k}: {got}"
    # Every distinct arrival is either released or dropped as a duplicate/too late.
    distinct = {(r.key, r.seq) for _, r in arrivals}
    assert released <= distinct
    assert len(out) + w.duplicates == len(arrivals)
    assert w.held_count == 0
