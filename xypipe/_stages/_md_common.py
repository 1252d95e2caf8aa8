"""What the aggregator's stages share: stream layout, wall clock, priorities."""

from __future__ import annotations

import time
from typing import Literal

import attrs

from xypipe._validate import Invalid, in_range, is_subject_token, non_empty, subject_pattern
from xypipe.abc import JetStream
from xypipe.contracts import Priority

PRIORITIES = {"low": Priority.PRIORITY_LOW, "normal": Priority.PRIORITY_NORMAL,
              "high": Priority.PRIORITY_HIGH}

def is_token(value: str) -> bool:
    """A single NATS subject token (groups become one)."""
    return is_subject_token(value)


def wall_us() -> int:
    """Wall-clock microseconds, for the ``ts_*_us`` fields clients compare across machines."""
    return time.time_ns() // 1000


@attrs.frozen
class StateStreams:
    """Where the aggregator keeps what a restart needs (both streams keep the last message per
    subject): its snapshots and, per (group, shard), the last delta sequence it emitted."""

    snapshot_stream: str = attrs.field(default="XY_MD_SNAPSHOT", validator=non_empty())
    snapshot_prefix: str = attrs.field(default="xy.md.snapshot", validator=subject_pattern())
    checkpoint_stream: str = attrs.field(default="XY_AGG_SEQ", validator=non_empty())
    checkpoint_prefix: str = attrs.field(default="xy.agg.seq", validator=subject_pattern())
    storage: str = attrs.field(default="file")
    #: How long the stored snapshots and checkpoints live (0 = forever).
    max_age_s: int = attrs.field(default=86_400, validator=in_range(0, 31_536_000))
    #: Most bytes each of the two streams keeps (0 = no limit beyond one message per subject;
    #: a file store also keeps deleted messages until it compacts, so a laptop sets one).
    max_bytes: int = attrs.field(default=0, validator=in_range(0, 1 << 44))

    def __attrs_post_init__(self) -> None:
        if self.storage not in ("file", "memory"):
            raise Invalid("storage", 'expected one of "file", "memory"', self.storage)

    async def ensure(self, js: JetStream) -> None:
        age = float(self.max_age_s) if self.max_age_s else None
        size = self.max_bytes or None
        storage: Literal["file", "memory"] = "memory" if self.storage == "memory" else "file"
        await js.ensure_stream(self.snapshot_stream, [f"{self.snapshot_prefix}.>"],
                               max_msgs_per_subject=1, max_age_s=age, max_bytes=size,
                               storage=storage)
        await js.ensure_stream(self.checkpoint_stream, [f"{self.checkpoint_prefix}.>"],
                               max_msgs_per_subject=1, max_age_s=age, max_bytes=size,
                               storage=storage)

    def checkpoint_subject(self, group: str, shard: int) -> str:
        return f"{self.checkpoint_prefix}.{group}.{shard}"
