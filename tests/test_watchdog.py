"""The staleness watchdog core, fed plain numbers (no clock, no I/O)."""

from __future__ import annotations

import pytest

from xypipe._watchdog import Status, StreamWatch, Watchdog


def gated(position: int | None = 100, stale_after: float = 5.0) -> StreamWatch:
    return StreamWatch("XY_SRC", stale_after, gated=True, now=0.0, position=position)


def test_gated_stream_is_starting_until_data_or_an_in_sync_source() -> None:
    w = gated()
    assert w.check(1.0).status is Status.STARTING
    w.source(1.0, 100)  # the source has nothing beyond what the feed starts after
    assert w.check(1.5).status is Status.FRESH


def test_idle_source_never_turns_a_gated_stream_stale() -> None:
    w = gated()
    w.data(1.0, 100)
    for t in range(2, 600):
        w.source(float(t), 100)
    v = w.check(600.0)
    assert v.status is Status.FRESH
    assert v.silence_s == pytest.approx(599.0)


def test_a_source_that_stops_answering_turns_a_silent_gated_stream_stale() -> None:
    w = gated()
    w.data(1.0, 100)
    w.source(1.0, 100)
    # The server freezes: no data, and no reading of the source's position either.
    assert w.check(6.0).status is Status.FRESH
    v = w.check(6.5)
    assert v.status is Status.STALE
    assert "position unread for 5.5 s" in v.reason
    # It answers again: the position is read and the idle market is fresh at once.
    w.source(7.0, 100)
    assert w.check(7.0).status is Status.FRESH


def test_data_keeps_a_stream_fresh_even_when_its_source_cannot_be_read() -> None:
    w = gated()
    w.source(0.0, 100)
    for t in range(1, 60):
        w.data(float(t), 100 + t)  # e.g. stream info refused, deliveries flowing
    assert w.check(60.0).status is Status.FRESH


def test_source_advancing_without_data_turns_stale_after_the_limit_only() -> None:
    w = gated()
    w.data(1.0, 100)
    w.source(10.0, 150)  # first seen ahead at t=10
    w.source(11.0, 180)
    assert w.check(14.9).status is Status.FRESH
    v = w.check(15.1)
    assert v.status is Status.STALE
    assert "XY_SRC" in v.reason and "14.1 s" in v.reason and "source at 180" in v.reason


def test_data_catching_up_with_the_source_makes_it_fresh_again() -> None:
    w = gated()
    w.data(1.0, 100)
    w.source(2.0, 150)
    assert w.check(8.0).status is Status.STALE
    w.data(9.0, 150)
    assert w.check(9.0).status is Status.FRESH


def test_slow_but_progressing_consumer_is_not_stale() -> None:
    w = gated()
    for t in range(1, 60):
        w.source(float(t), 100 + 100 * t)  # the source runs ahead all the time
        w.data(float(t), 100 + 50 * t)  # the feed follows, behind but moving
    assert w.check(60.0).status is Status.FRESH


def test_source_seen_ahead_after_a_long_idle_spell_is_not_stale_at_once() -> None:
    w = gated()
    w.data(1.0, 100)
    w.source(500.0, 101)
    assert w.check(500.5).status is Status.FRESH
    assert w.check(505.5).status is Status.STALE


def test_unknown_position_uses_the_growth_of_the_source() -> None:
    w = gated(position=None)
    for t in range(11):  # polled every second
        w.source(float(t), 1000)
    assert w.check(10.0).status is Status.FRESH  # nothing new at the source: nothing to wait for
    w.source(11.0, 1001)
    assert w.check(16.5).status is Status.STALE


def test_replay_is_catching_up_until_the_target_is_reached() -> None:
    w = gated(position=10)
    w.catch_up(5000)
    w.source(0.5, 5200)
    w.data(1.0, 3000)
    v = w.check(1.0)
    assert v.status is Status.CATCHING_UP and "at 3000 of 5000" in v.reason
    w.data(2.0, 5000)
    assert w.check(2.0).status is Status.FRESH


def test_a_stuck_replay_is_stale() -> None:
    w = gated(position=10)
    w.catch_up(5000)
    w.source(0.5, 5000)
    w.data(1.0, 3000)
    assert w.check(7.0).status is Status.STALE


def test_cadence_stream_goes_stale_after_silence_and_back_with_data() -> None:
    w = StreamWatch("xy.md.snapshot.fx", 6.0, gated=False, now=0.0)
    assert w.check(1.0).status is Status.STARTING
    assert w.check(6.5).status is Status.STALE  # nothing since start either
    w.data(7.0)
    assert w.check(12.9).status is Status.FRESH
    v = w.check(13.5)
    assert v.status is Status.STALE and "no data for 6.5 s" in v.reason


def test_watchdog_reports_each_transition_once() -> None:
    dog = Watchdog()
    w = dog.add(StreamWatch("s", 2.0, gated=False, now=0.0))
    w.data(0.5)
    _, changes = dog.check(1.0)
    assert [(c.old, c.new) for c in changes] == [(Status.STARTING, Status.FRESH)]
    assert dog.check(2.0)[1] == []
    _, changes = dog.check(3.0)
    assert [(c.old, c.new, c.became_stale) for c in changes] == [
        (Status.FRESH, Status.STALE, True)]
    assert dog.check(3.5)[1] == []
    w.data(4.0)
    _, changes = dog.check(4.0)
    assert [(c.new, c.recovered) for c in changes] == [(Status.FRESH, True)]


def test_a_stream_is_watched_once_and_stale_after_must_be_positive() -> None:
    dog = Watchdog()
    dog.add(StreamWatch("s", 1.0, gated=False, now=0.0))
    with pytest.raises(ValueError, match="already watched"):
        dog.add(StreamWatch("s", 1.0, gated=False, now=0.0))
    with pytest.raises(ValueError, match="stale_after"):
        StreamWatch("t", 0.0, gated=False, now=0.0)


def test_subject_matching_follows_nats_wildcards() -> None:
    from xypipe._stages._cadence import subject_matches

    def m(p: str, s: str) -> bool:
        return subject_matches(p.split("."), s.split("."))

    assert m("xy.md.snapshot.*", "xy.md.snapshot.fx")
    assert not m("xy.md.snapshot.*", "xy.md.snapshot.fx.1")
    assert not m("xy.md.snapshot.*", "xy.md.snapshot")
    assert m("xy.md.>", "xy.md.snapshot.fx") and not m("xy.md.>", "xy.md")
    assert not m("xy.md.tick.*", "xy.md.snapshot.fx")


def test_cadence_watch_config_names_what_is_wrong() -> None:
    from xypipe import parse_config
    from xypipe._errors import ConfigError

    with pytest.raises(ConfigError, match="forget_after_ms"):
        parse_config({"nats": {"url": "nats://127.0.0.1:4222"}, "http": {"enabled": False},
                      "pipelines": {"p": {"stages": [
                          {"use": "nats_source", "subjects": ["xy.md.>"],
                           "watch": [{"subject": "xy.md.snapshot.*", "cadence_ms": 2000,
                                      "misses": 3, "forget_after_ms": 5000}]},
                          {"use": "xypipe.testing:ListSink"}]}}}, "t.toml")


def test_the_feed_start_gives_the_position_already_delivered() -> None:
    from xypipe._stages._srcwatch import delivered_before

    assert delivered_before(("seq", 101)) == 100
    assert delivered_before("all") == 0
    assert delivered_before(("time", None)) is None
