"""Flags and stored checkpoints decode through the one contract decoder: bad bytes are counted
and logged, never fatal; a newer writer's extra fields are counted."""

from __future__ import annotations

import pytest
import trio
from gw_support import JsonLogCapture, Keys

from xypipe._audit import AuditLog
from xypipe._contracts import decoder_for
from xypipe._degrade import Level
from xypipe._errors import XyError
from xypipe._gateway._flags import DISABLED_GROUPS, FORCE_LEVEL, FlagError, FlagValue, validate
from xypipe._gateway._flagwatch import FlagBoard
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._hub import BadMessage
from xypipe._gateway._snapfetch import checkpoint
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._nats import KvEntry
from xypipe.contracts import Delta


def board(keys: Keys, metrics: Metrics, changes: list[int]) -> FlagBoard:
    fb = FlagBoard("xy_feature_flags", GatewayMetrics(metrics), AuditLog(get_logger("audit")),
                   get_logger("gateway"), decoder_for(metrics.registry), timeout_s=2.0,
                   wall=lambda: 1.0, on_change=lambda: changes.append(fb.version))
    return fb


def entry(key: str, value: bytes, revision: int) -> KvEntry:
    return KvEntry(bucket="xy_feature_flags", key=key, value=value, revision=revision)


async def test_a_stored_change_is_applied_once_and_moves_the_version(keys: Keys) -> None:
    changes: list[int] = []
    fb = board(keys, Metrics(), changes)
    async with trio.open_nursery() as reverts:
        stored = FlagValue(FORCE_LEVEL, 2, "ops", 5).encode()
        fb.entry(entry(FORCE_LEVEL, stored, 3), reverts)
        fb.entry(entry(FORCE_LEVEL, stored, 3), reverts)  # a re-created watch repeats it
    assert changes == [1]
    assert fb[FORCE_LEVEL] == FlagValue(FORCE_LEVEL, 2, "ops", 5, 3)
    assert fb.forced_level() == Level.L2 and fb.expected_revision(FORCE_LEVEL) == 3


async def test_bytes_that_are_no_feature_flag_are_counted_and_logged_and_the_watch_goes_on(
    keys: Keys, json_logs: JsonLogCapture,
) -> None:
    metrics = Metrics()
    changes: list[int] = []
    fb = board(keys, metrics, changes)
    async with trio.open_nursery() as reverts:
        fb.entry(entry(FORCE_LEVEL, b"\xff\xff\xff", 1), reverts)
        fb.entry(entry(DISABLED_GROUPS, FlagValue(DISABLED_GROUPS, ["fx"]).encode(), 2),
                 reverts)
    assert fb[FORCE_LEVEL].value is None and fb.disabled_groups() == frozenset({"fx"})
    assert metrics.sample("gateway_bad_messages_total", {"reason": "feature_flag"}) == 1
    assert metrics.sample("contract_decode_errors_total",
                          {"message": "xy.md.v1.FeatureFlag"}) == 1
    [line] = json_logs.find(code="XY-FLAG-002")
    assert line["key"] == FORCE_LEVEL and "FeatureFlag" in line["error"]


async def test_a_newer_writers_extra_fields_are_counted_and_the_flag_applies(keys: Keys) -> None:
    metrics = Metrics()
    fb = board(keys, metrics, [])
    # Field 15 (varint 1): what a newer schema's writer could add.
    newer = FlagValue(FORCE_LEVEL, 1, "ops").encode() + b"\x78\x01"
    async with trio.open_nursery() as reverts:
        fb.entry(entry(FORCE_LEVEL, newer, 1), reverts)
    assert fb.forced_level() == Level.L1
    assert metrics.sample("contract_unknown_fields_total",
                          {"message": "xy.md.v1.FeatureFlag"}) == 1


def test_a_flag_error_is_an_xypipe_error_and_still_a_value_error() -> None:
    with pytest.raises(FlagError) as info:
        validate(FORCE_LEVEL, 7)
    assert isinstance(info.value, XyError) and isinstance(info.value, ValueError)
    assert info.value.code == "XY-ADM-003"
    assert "expected null or an integer 0..3, got 7" in str(info.value)


def test_a_stored_checkpoint_that_does_not_decode_or_has_no_seq_is_a_bad_message() -> None:
    decoder = decoder_for(Metrics().registry)
    assert checkpoint("xy.agg.seq.fx.0", Delta(group="fx", seq=9).SerializeToString(),
                      decoder).seq == 9
    with pytest.raises(BadMessage, match="not a checkpoint Delta"):
        checkpoint("xy.agg.seq.fx.0", b"\xff\xff", decoder)
    with pytest.raises(BadMessage, match="checkpoint without seq"):
        checkpoint("xy.agg.seq.fx.0", Delta(group="fx").SerializeToString(), decoder)
    assert decoder.registry.get_sample_value("contract_decode_errors_total",
                                             {"message": "xy.md.v1.Delta"}) == 1
