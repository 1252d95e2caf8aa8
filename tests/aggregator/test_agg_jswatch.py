"""The feed's consumer watch (sans-I/O) and the retry backoff, with plain numbers for time."""

from __future__ import annotations

import pytest

from xypipe._errors import (
    BridgeError,
    NatsConnectionError,
    NatsJsUnavailable,
    NatsNoResponders,
    NatsNotFound,
    NatsPermissionDenied,
    NatsTimeout,
)
from xypipe._retry import Backoff, transient
from xypipe._stages._jswatch import (
    GAP,
    HEARTBEAT,
    LAME_DUCK,
    MISSING,
    RECONNECTED,
    SILENT,
    Check,
    ConsumerWatch,
)

HB = 0.5


def watch(now: float = 0.0) -> ConsumerWatch:
    w = ConsumerWatch(HB, 3, now, Backoff(0.1, 1.0))
    w.started(now, 100)  # consumer created at stream seq 101
    return w


def test_backoff_doubles_from_initial_and_is_capped() -> None:
    b = Backoff(0.05, 1.0)
    assert [b.delay(n) for n in range(0, 7)] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert b.delay(10_000) == 1.0


def test_only_outage_errors_are_transient() -> None:
    for exc in (NatsTimeout("t"), NatsConnectionError("c"), NatsNoResponders("n"),
                NatsJsUnavailable("j")):
        assert transient(exc), exc
    for exc in (NatsNotFound("stream"), NatsPermissionDenied("p"), BridgeError("bad request")):
        assert not transient(exc), exc


def test_silence_counts_only_while_waiting() -> None:
    w = watch()
    # Busy downstream for a long time: no check, however old the last heartbeat.
    assert w.due(10.0) is None
    assert w.deadline() == float("inf")
    w.waiting(10.0)
    assert w.deadline() == 10.0 + 3 * HB
    assert w.due(11.4) is None
    assert w.due(11.5) == Check(HEARTBEAT, recreate=False)


def test_heartbeats_keep_the_consumer_presumed_alive() -> None:
    w = watch()
    w.waiting(0.0)
    for t in (0.5, 1.0, 1.5, 2.0):
        w.heartbeat(t, 100)
        assert w.due(t + 1.49) is None
    assert w.due(2.0 + 1.5) == Check(HEARTBEAT, recreate=False)


def test_a_found_consumer_that_stays_silent_is_recreated_on_the_third_check() -> None:
    w = watch()
    w.waiting(0.0)
    t = 0.0
    for _ in range(2):
        t += 1.5
        check = w.due(t)
        assert check == Check(HEARTBEAT, recreate=False)
        w.confirmed(t, check)  # consumer info: it exists
    t += 1.5
    assert w.due(t) == Check(SILENT, recreate=True)
    w.recreated(t)
    assert w.due(t + 1.49) is None


def test_a_heartbeat_ahead_of_what_was_received_means_a_gap() -> None:
    w = watch()
    w.waiting(0.0)
    assert w.accept(101) and w.accept(102)
    w.heartbeat(0.5, 102)
    assert w.due(0.5) is None
    w.heartbeat(1.0, 105)  # 103..105 were sent, never received
    assert w.due(1.0) == Check(GAP, recreate=True)


def test_reconnect_recreates_at_once_even_during_a_backoff() -> None:
    w = watch()
    w.waiting(0.0)
    check = w.due(1.5)
    assert check is not None
    assert w.failed(1.5, check) == 0.1
    assert w.failed(1.6, check) == 0.2
    assert w.due(1.7) is None  # backing off until 1.8
    w.reconnected()
    assert w.due(1.7) == Check(RECONNECTED, recreate=True)


def test_lame_duck_asks_first_and_a_reconnect_upgrades_it() -> None:
    w = watch()
    w.lame_duck()
    assert w.due(0.0) == Check(LAME_DUCK, recreate=False)
    w.reconnected()
    assert w.due(0.0) == Check(RECONNECTED, recreate=True)


def test_deleted_status_recreates() -> None:
    w = watch()
    w.deleted()
    assert w.due(0.0) == Check(MISSING, recreate=True)


def test_resume_point_is_last_handed_plus_one_and_overlap_is_dropped() -> None:
    w = watch()
    assert w.resume_seq == 101
    assert [s for s in (101, 102, 103) if w.accept(s)] == [101, 102, 103]
    w.handed(103)
    assert w.resume_seq == 104
    w.recreated(5.0)
    # The old consumer's last deliveries and the new one's overlap: each once.
    assert [s for s in (104, 105, 104, 105, 106) if w.accept(s)] == [104, 105, 106]


def test_failed_checks_back_off_exponentially_and_recover() -> None:
    w = watch()
    w.waiting(0.0)
    check = w.due(1.5)
    assert check is not None
    delays = [w.failed(1.5, check) for _ in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert w.due(2.4) is None and w.due(2.5) == check
    w.confirmed(2.5, check)
    assert w.due(2.5) is None


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="heartbeat_s"):
        ConsumerWatch(0, 3, 0.0)
