"""Tapes: NATS messages with their timing in one compact, versioned file (docs/tapes.md).

A tape is a length-delimited protobuf stream (``proto/xy/md/v1/tape.proto``): one
``TapeHeader``, then one ``TapeRecord`` per message — the subject, the payload exactly as
published and the microseconds since the previous record. The framing is protobuf's own
(:mod:`xypipe._md.wire`); nothing here parses bytes by hand.

* :func:`write_tape` / :class:`TapeWriter` write one (the writer streams, for ``xypipe record``,
  and patches the record count into the header when it closes: the count is a fixed64, so the
  header keeps its size);
* :func:`read_tape` reads and checks a whole tape at once: a damaged or cut tape raises a
  :class:`~xypipe._errors.TapeError` naming the file, the record and its byte offset and what
  was expected, never a silently shorter tape;
* :func:`replay_tape` publishes a tape onto NATS at its own pace, ``speed`` times faster, or
  as fast as the connection takes it.

The values here are plain frozen attrs classes; the protobuf messages stay inside this module.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import attrs
import trio
from google.protobuf.message import DecodeError

from xypipe._errors import (
    NatsBackpressure,
    TapeCorrupt,
    TapeCountMismatch,
    TapeError,
    TapeOrderError,
    TapeTruncated,
    TapeVersionError,
)
from xypipe._md.wire import TruncatedStream, delimited, iter_delimited_at, varint, varint_field
from xypipe._md.wire import varint_tag as _varint_tag
from xypipe.abc import NatsClient
from xypipe.contracts import TapeHeader as _HeaderMsg
from xypipe.contracts import TapeRecord as _RecordMsg
from xypipe.contracts import Tick

#: The header's ``format``: tells a tape from any other length-delimited file.
TAPE_FORMAT = "xypipe-tape"
#: The layout this module writes (and the only one it reads).
TAPE_VERSION = 1

TICK_PREFIX = "xy.src.tick."
_EXCHANGE_TAG = _varint_tag(Tick.DESCRIPTOR.fields_by_name["ts_exchange_us"].number)
_ARRIVAL_TAG = _varint_tag(Tick.DESCRIPTOR.fields_by_name["ts_arrival_us"].number)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class TapeHeader:
    """What a tape says about itself. ``created_us``: wall-clock microseconds of its start
    (t = 0); ``seed``: the synthetic market's seed (``None`` for a recording); ``subjects``: the
    subject patterns recorded; ``records``: how many records follow (0 = not known: a recording
    that was not closed)."""

    version: int = TAPE_VERSION
    created_us: int = 0
    source: str = ""
    seed: int | None = None
    subjects: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    records: int = 0


@attrs.frozen
class TapeRecord:
    """One message: ``t_us`` microseconds after the tape's start, on ``subject``."""

    t_us: int
    subject: str
    data: bytes


# --------------------------------------------------------------------------- writing


def _header_bytes(h: TapeHeader) -> bytes:
    msg = _HeaderMsg(format=TAPE_FORMAT, version=h.version, created_us=h.created_us,
                     source=h.source, subjects=list(h.subjects), records=h.records)
    if h.seed is not None:
        msg.seed = h.seed
    return msg.SerializeToString(deterministic=True)


class TapeWriter:
    """Writes a tape record by record (a recording of unknown length); :meth:`close` patches the
    record count into the header. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, header: TapeHeader) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header = attrs.evolve(header, records=0)
        self.count = 0
        self._last_t = 0
        head = _header_bytes(self.header)
        self._f: BinaryIO = self.path.open("wb")
        self._f.write(delimited(head))
        self._head_len = len(head)

    def write(self, rec: TapeRecord) -> None:
        if rec.t_us < self._last_t:
            raise TapeOrderError(
                f"{self.path}: record {self.count} at t={rec.t_us} us comes before the one "
                f"before it (t={self._last_t} us); expected records in time order, t >= 0")
        payload = _RecordMsg(dt_us=rec.t_us - self._last_t, subject=rec.subject,
                             data=rec.data).SerializeToString()
        self._f.write(varint(len(payload)))
        self._f.write(payload)
        self._last_t = rec.t_us
        self.count += 1

    def flush(self) -> None:
        """Hand what was written to the OS (a recorder killed later keeps it)."""
        self._f.flush()

    def close(self) -> TapeHeader:
        """Patch the record count into the header and close; returns the final header."""
        if self._f.closed:
            return self.header
        self.header = attrs.evolve(self.header, records=self.count)
        head = _header_bytes(self.header)
        # ``records`` is a fixed64 present from the start: the header keeps its length.
        assert len(head) == self._head_len, "the tape header changed size"
        self._f.flush()
        self._f.seek(len(varint(len(head))))
        self._f.write(head)
        self._f.close()
        return self.header

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_tape(path: str | Path, header: TapeHeader, records: Iterable[TapeRecord]) -> TapeHeader:
    """Write a whole tape (``header.records`` is set from what was written); returns the header
    as written."""
    with TapeWriter(path, header) as w:
        for rec in records:
            w.write(rec)
    return w.header


# --------------------------------------------------------------------------- reading


@attrs.frozen
class Tape:
    """A tape read whole and checked: its header and its records in time order."""

    header: TapeHeader
    records: tuple[TapeRecord, ...]
    path: str = ""

    def __iter__(self) -> Iterator[TapeRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def duration_us(self) -> int:
        """Time of the last record (0 for an empty tape)."""
        return self.records[-1].t_us if self.records else 0

    @property
    def closed(self) -> bool:
        """The header says how many records there are (its writer closed it)."""
        return self.header.records > 0 or not self.records


def _read_header(data: bytes, where: str) -> tuple[TapeHeader, int]:
    if not data:
        raise TapeError(f"{where}: empty file; expected a tape (a TapeHeader first)")
    try:
        start, head = next(iter_delimited_at(data))
    except TruncatedStream:
        raise TapeError(f"{where}: not a tape: the first message is cut short at byte 0; "
                        f"expected a length-delimited TapeHeader") from None
    try:
        msg = _HeaderMsg.FromString(head)
    except DecodeError:
        raise TapeError(f"{where}: not a tape: bytes 0..{len(head)} do not decode as a "
                        f"TapeHeader") from None
    if msg.format != TAPE_FORMAT:
        raise TapeError(f"{where}: not a tape: header format {msg.format!r} at byte 0; "
                        f"expected {TAPE_FORMAT!r}")
    if msg.version != TAPE_VERSION:
        raise TapeVersionError(f"{where}: tape version {msg.version} at byte 0; this xypipe "
                               f"reads version {TAPE_VERSION}")
    header = TapeHeader(version=msg.version, created_us=msg.created_us, source=msg.source,
                        seed=msg.seed if msg.HasField("seed") else None,
                        subjects=tuple(str(s) for s in msg.subjects), records=msg.records)
    return header, start + len(varint(len(head))) + len(head)


def read_tape(path: str | Path) -> Tape:
    """Read and check a whole tape. Raises a :class:`~xypipe._errors.TapeError` subclass naming
    the file, the record index, its byte offset and what was expected (``OSError`` if the file
    cannot be read)."""
    where = os.fspath(path)
    data = Path(path).read_bytes()
    header, pos = _read_header(data, where)
    records: list[TapeRecord] = []
    append = records.append
    t = 0
    at = pos
    try:
        for start, payload in iter_delimited_at(data, pos):
            try:
                m = _RecordMsg.FromString(payload)
            except DecodeError:
                raise TapeCorrupt(
                    f"{where}: record {len(records)} at byte {start} ({len(payload)} bytes) "
                    f"does not decode as a TapeRecord; expected subject, data and dt_us"
                ) from None
            t += m.dt_us
            append(TapeRecord(t, m.subject, m.data))
            at = start + len(varint(len(payload))) + len(payload)
    except TruncatedStream as exc:
        raise TapeTruncated(
            f"{where}: the last record (record {len(records)}, at byte {at}) is truncated: "
            f"{exc}; the file ends at byte {len(data)} after {len(records)} whole records"
        ) from None
    if header.records and header.records != len(records):
        raise TapeCountMismatch(
            f"{where}: the header says {header.records} records, the file holds "
            f"{len(records)} (ending at byte {len(data)}); expected exactly "
            f"{header.records} — the tape was cut at a record boundary or appended to")
    return Tape(header, tuple(records), where)


# --------------------------------------------------------------------------- replaying


def parse_speed(text: str) -> float | None:
    """``"1x"``, ``"10x"``, ``"2.5"`` -> the factor; ``"max"`` -> ``None`` (as fast as the
    connection takes it). Raises ``ValueError`` saying what was expected."""
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t.removesuffix("x"))
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a speed such as 1x, 10x, 0.5x or max, got {text!r}")
    return value


class _Prepared:
    """A record ready to send: the tick's lag behind the record time, if it is to be retimed."""

    __slots__ = ("data", "due", "lag", "subject")

    def __init__(self, due: float, subject: str, data: bytes, lag: int | None) -> None:
        self.due = due
        self.subject = subject
        self.data = data
        self.lag = lag


def _prepare(tape: Tape, speed: float | None, retime: bool) -> list[_Prepared]:
    out: list[_Prepared] = []
    created = tape.header.created_us
    for rec in tape.records:
        lag: int | None = None
        if retime and rec.subject.startswith(TICK_PREFIX):
            try:
                ts = Tick.FromString(rec.data).ts_exchange_us
            except DecodeError:
                ts = 0  # a malformed tick on the tape is replayed as it is (the feed's fault)
            if ts:
                lag = created + rec.t_us - ts
        due = 0.0 if speed is None else rec.t_us / 1e6 / speed
        out.append(_Prepared(due, rec.subject, rec.data, lag))
    return out


async def replay_tape(nc: NatsClient, tape: Tape, speed: float | None, *,
                      retime: bool = True,
                      on_sent: Callable[[int], None] | None = None) -> int:
    """Publish every record of ``tape`` at its time: ``speed`` times the tape's pace (1.0 = as
    recorded), or ``None`` = as fast as the connection takes it (backpressure respected).
    Returns how many messages were published, after a flush.

    With ``retime`` (the default) each tick (``xy.src.tick.*``) is sent as if it happened now:
    its ``ts_exchange_us`` keeps its lag behind the record's time but moves to the wall clock
    of the replay, and ``ts_arrival_us`` is the send time (both appended as fields, which
    override the earlier values: no re-encoding). Without it, an old tape's ticks would fall
    outside the aggregator's timestamp bounds. ``on_sent(n)`` is called with the running count
    after each burst (a progress bar).
    """
    plan = _prepare(tape, speed, retime)
    publish_nowait = nc.publish_nowait
    start = trio.current_time()
    sent = 0
    i, n = 0, len(plan)
    while i < n:
        now = trio.current_time()
        due = start + plan[i].due
        if due > now:
            await trio.sleep_until(due)
            now = trio.current_time()
        # Everything due by now goes out in one burst, then one checkpoint.
        horizon = now - start
        now_us = time.time_ns() // 1000
        burst = 0
        while i < n and plan[i].due <= horizon and burst < 4096:
            p = plan[i]
            data = p.data
            if p.lag is not None:
                data = (data + varint_field(_EXCHANGE_TAG, now_us - p.lag)
                        + varint_field(_ARRIVAL_TAG, now_us))
            try:
                publish_nowait(p.subject, data)
            except NatsBackpressure:
                await nc.publish(p.subject, data)
            i += 1
            burst += 1
        sent += burst
        if on_sent is not None:
            on_sent(sent)
        await trio.lowlevel.checkpoint()
    await nc.flush()
    return sent


# --------------------------------------------------------------------------- recording


async def record_tape(nc: NatsClient, subjects: Iterable[str], path: str | Path, *,
                      duration: float | None = None, count: int = 0, source: str = "",
                      on_recorded: Callable[[int], None] | None = None,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                      ) -> TapeHeader:
    """Record what arrives on ``subjects`` into a tape at ``path`` until ``duration`` seconds
    have passed (``None``: until cancelled) or ``count`` messages (0: no limit) were recorded;
    returns the closed tape's header. Started (``task_status``) once every subscription is in
    place, so nothing published after that is missed.

    A record's time is when its batch reached this process (Trio's clock, microseconds since
    the start; the header's ``created_us`` is the wall clock then). Messages of one subject keep
    their order; messages of different subjects are interleaved in the order their batches came
    in. The tape is closed (record count written) however recording ends, cancellation
    included; a process killed outright leaves a tape without a count, still readable."""
    subjects = list(subjects)
    header = TapeHeader(created_us=time.time_ns() // 1000, source=source or "xypipe record",
                        subjects=tuple(subjects))
    done = trio.Event()
    with TapeWriter(path, header) as writer:
        start = trio.current_time()
        write = writer.write

        async def follow(subject: str, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with nc.subscribe(subject, max_batch=1024) as sub:
                task_status.started()
                async for batch in sub:
                    t_us = round((trio.current_time() - start) * 1e6)
                    for m in batch:
                        write(TapeRecord(t_us, m.subject, bytes(m.data)))
                        if count and writer.count >= count:
                            done.set()
                            return
                    writer.flush()  # per batch: a killed recorder loses at most one
                    if on_recorded is not None:
                        on_recorded(writer.count)

        async with trio.open_nursery() as nursery:
            for subject in subjects:
                await nursery.start(follow, subject)
            await nc.flush()  # the server has every subscription before we say we started
            task_status.started()
            with trio.move_on_after(duration if duration is not None else math.inf):
                await done.wait()
            nursery.cancel_scope.cancel()
    return writer.header


__all__ = [
    "TAPE_FORMAT",
    "TAPE_VERSION",
    "Tape",
    "TapeHeader",
    "TapeRecord",
    "TapeWriter",
    "parse_speed",
    "read_tape",
    "record_tape",
    "replay_tape",
    "write_tape",
]
