"""The tape format: round trips, and every way a damaged tape is refused with its place named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xypipe._errors import (
    TapeCorrupt,
    TapeCountMismatch,
    TapeError,
    TapeOrderError,
    TapeTruncated,
    TapeVersionError,
)
from xypipe._md.wire import delimited
from xypipe._tape import (
    TAPE_VERSION,
    TapeHeader,
    TapeRecord,
    TapeWriter,
    parse_speed,
    read_tape,
    write_tape,
)
from xypipe.contracts import TapeHeader as HeaderMsg
from xypipe.contracts import TapeRecord as RecordMsg

RECORDS = [TapeRecord(0, "xy.ref.contract.XNAS.S1", b"contract"),
           TapeRecord(0, "xy.src.tick.XNAS.S1", b"\x08\x01"),
           TapeRecord(1_500, "xy.src.tick.XNAS.S1", b""),
           TapeRecord(1_500, "xy.src.tick.XNYS.S2", bytes(range(256))),
           TapeRecord(9_000_000, "xy.src.tick.XNAS.S1", b"x" * 3000)]


def _tape(tmp_path: Path, records: list[TapeRecord] = RECORDS) -> Path:
    path = tmp_path / "t.tape"
    write_tape(path, TapeHeader(created_us=1_767_225_600_000_000, source="test", seed=7,
                                subjects=("xy.src.>", "xy.ref.>")), records)
    return path


def test_a_tape_round_trips_header_and_records(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    tape = read_tape(path)
    assert tape.header == TapeHeader(version=TAPE_VERSION, created_us=1_767_225_600_000_000,
                                     source="test", seed=7, subjects=("xy.src.>", "xy.ref.>"),
                                     records=len(RECORDS))
    assert list(tape) == RECORDS
    assert len(tape) == 5 and tape.duration_us == 9_000_000 and tape.closed


def test_a_recording_has_no_seed_and_an_empty_tape_reads_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.tape"
    header = write_tape(path, TapeHeader(created_us=5), [])
    tape = read_tape(path)
    assert header.records == 0 and tape.header.seed is None and list(tape) == []
    write_tape(path, TapeHeader(seed=0), RECORDS[:1])
    assert read_tape(path).header.seed == 0  # seed 0 is a seed, not "none"


def test_the_file_is_header_then_delimited_records(tmp_path: Path) -> None:
    """The layout docs/tapes.md promises, read with nothing but protobuf's own messages."""
    from xypipe._md.wire import iter_delimited

    messages = list(iter_delimited(_tape(tmp_path).read_bytes()))
    head = HeaderMsg.FromString(messages[0])
    assert (head.format, head.version, head.records) == ("xypipe-tape", 1, 5)
    recs = [RecordMsg.FromString(m) for m in messages[1:]]
    assert [r.dt_us for r in recs] == [0, 0, 1_500, 0, 8_998_500]  # deltas keep varints short
    assert [r.subject for r in recs] == [r.subject for r in RECORDS]


def test_a_writer_refuses_records_out_of_time_order(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t.tape", TapeHeader()) as w:
        w.write(TapeRecord(10, "a", b""))
        with pytest.raises(TapeOrderError, match=r"record 1 at t=5 us comes before"):
            w.write(TapeRecord(5, "a", b""))
    assert read_tape(tmp_path / "t.tape").header.records == 1


def test_a_tape_not_closed_reads_to_its_end(tmp_path: Path) -> None:
    w = TapeWriter(tmp_path / "t.tape", TapeHeader())
    for rec in RECORDS:
        w.write(rec)
    w._f.flush()  # a recording killed before close: no count in the header
    tape = read_tape(tmp_path / "t.tape")
    assert list(tape) == RECORDS and tape.header.records == 0 and not tape.closed
    w.close()
    assert read_tape(tmp_path / "t.tape").closed


def test_a_truncated_last_record_is_named(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(TapeTruncated) as err:
        read_tape(path)
    assert err.value.code == "XY-TAPE-003"
    msg = str(err.value)
    assert "the last record (record 4, at byte" in msg and "is truncated" in msg
    assert f"the file ends at byte {len(data) - 100} after 4 whole records" in msg


def _last_record_bytes() -> bytes:
    return RecordMsg(dt_us=8_998_500, subject=RECORDS[-1].subject,
                     data=RECORDS[-1].data).SerializeToString()


def test_a_tape_cut_inside_a_length_prefix_is_truncated(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    data = path.read_bytes()
    start = len(data) - len(delimited(_last_record_bytes()))
    assert data[start] & 0x80  # a two-byte length prefix (the record is > 127 bytes)
    path.write_bytes(data[: start + 1])
    with pytest.raises(TapeTruncated, match=r"record 4, at byte \d+\) is truncated: stream ends "
                                            r"inside a length prefix"):
        read_tape(path)


def test_a_tape_cut_at_a_record_boundary_disagrees_with_its_count(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(delimited(_last_record_bytes()))])
    with pytest.raises(TapeCountMismatch, match=r"the header says 5 records, the file holds 4"):
        read_tape(path)


def test_a_damaged_record_in_the_middle_is_named_with_its_offset(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.index(b"xy.src.tick.XNYS.S2") - 1  # the subject's length byte
    data[at - 1] = 0xFF  # the subject's tag becomes an invalid wire type
    path.write_bytes(bytes(data))
    with pytest.raises(TapeCorrupt) as err:
        read_tape(path)
    assert err.value.code == "XY-TAPE-004"
    assert "record 3 at byte" in str(err.value) and "does not decode as a TapeRecord" in str(
        err.value)


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "empty file"),
    (b"\x05ab", "the first message is cut short"),
    (delimited(b"\xff\xff\xff"), "do not decode as a TapeHeader"),
    (delimited(HeaderMsg(format="something-else", version=1).SerializeToString()),
     "header format 'something-else'"),
    (delimited(RecordMsg(subject="xy.src.tick.A.B").SerializeToString()), "header format"),
])
def test_a_file_that_is_not_a_tape_is_refused(tmp_path: Path, content: bytes,
                                              expected: str) -> None:
    path = tmp_path / "not.tape"
    path.write_bytes(content)
    with pytest.raises(TapeError, match=expected) as err:
        read_tape(path)
    assert err.value.code == "XY-TAPE-001" and str(path) in str(err.value)


def test_a_newer_version_is_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "v2.tape"
    path.write_bytes(delimited(HeaderMsg(format="xypipe-tape", version=2).SerializeToString()))
    with pytest.raises(TapeVersionError, match=r"tape version 2 at byte 0; this xypipe reads "
                                               r"version 1"):
        read_tape(path)


@pytest.mark.parametrize(("text", "speed"), [("1x", 1.0), ("10x", 10.0), ("0.5x", 0.5),
                                             ("2.5", 2.5), ("max", None), (" MAX ", None)])
def test_speeds(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["0x", "-1x", "fast", "", "infx", "nanx"])
def test_bad_speeds_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a speed such as 1x, 10x, 0.5x or max"):
        parse_speed(text)


def _xypipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xypipe", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_cli_reports_a_damaged_tape_with_its_code(tmp_path: Path) -> None:
    path = _tape(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    for args in (["tape", "info", str(path)], ["tape", "deltas", str(path), "--out", "d"],
                 ["publish", "--tape", str(path), "--url", "nats://127.0.0.1:1"]):
        proc = _xypipe(*args, cwd=tmp_path)
        assert proc.returncode == 1, args
        assert "XY-TAPE-003" in proc.stderr and "is truncated" in proc.stderr, proc.stderr
    proc = _xypipe("publish", "--tape", str(path), "--speed", "fast", cwd=tmp_path)
    assert proc.returncode == 2 and "expected a speed such as 1x" in proc.stderr


def test_tape_info_describes_a_tape(tmp_path: Path) -> None:
    proc = _xypipe("tape", "info", str(_tape(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["records"] == 5 and info["seed"] == 7 and info["closed"]
    assert info["by_subject"] == {"xy.ref.contract": 1, "xy.src.tick": 4}
