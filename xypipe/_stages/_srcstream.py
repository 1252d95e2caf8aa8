"""The source stream (``XY_SRC``): one definition for whoever writes to it or reads from it.

Raw ticks and reference contracts are only worth publishing once a stream keeps them: a
contract published before the stream exists is lost, and the aggregator then routes every
symbol to the default group. So the aggregator's ``ingest`` and the demo ``publisher`` (and
``xypipe publish``) both make sure the stream exists before anything else, with this one
definition, whoever starts first (see docs/architecture.md, "Cold start").

Creation is idempotent and never overwrites: an existing stream with another configuration is
reconciled by one documented rule (:meth:`SourceStream.ensure`):

* subjects differ: :class:`SourceStreamMismatch` (``XY-AGG-010``) — for the aggregator
  (``owner=True``) any difference, for a publisher a stream that does not capture every subject
  it publishes on. A stream capturing other subjects loses data silently; an operator decides.
* retention (``max_age_s``, ``max_bytes``) differs: the aggregator owns retention and sets its
  own, logged with ``XY-AGG-011``; a publisher leaves it as it is (logged at INFO).
* replicas differ (``[nats] replicas``: a stream made on one server, now on a cluster): the
  aggregator sets its own with the retention (JetStream moves a live stream to more or fewer
  copies), logged with ``XY-AGG-011``; a publisher leaves it as it is.
* storage differs: kept as it is (it cannot change on a live stream, and it decides durability,
  not what is captured), logged with ``XY-AGG-011``. A stream a publisher created with the
  default file storage stays file-backed for an aggregator configured with memory storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from xypipe._errors import SOURCE_STREAM_RETENTION, SourceStreamMismatch
from xypipe._log import Logger
from xypipe._validate import in_range, non_empty, one_of, subject_patterns
from xypipe.abc import JetStream, StreamState

DEFAULT_SUBJECTS = ("xy.src.>", "xy.ref.>")


@attrs.frozen
class StreamSettings:
    """What the reconciliation compares: subjects, retention and storage."""

    subjects: tuple[str, ...]
    max_age_s: float | None
    max_bytes: int | None
    storage: str
    #: Copies the stream keeps (None: whatever the connection creates with).
    replicas: int | None = None

    @classmethod
    def read(cls, have: Mapping[str, object]) -> StreamSettings:
        """An existing stream's settings as the bridge reports them (``create_stream``)."""
        subjects, age, size = have.get("subjects"), have.get("max_age_s"), have.get("max_bytes")
        return cls(
            subjects=tuple(str(s) for s in subjects) if isinstance(subjects, list | tuple)
            else (),
            max_age_s=float(age) if isinstance(age, int | float) else None,
            max_bytes=size if isinstance(size, int) else None,
            storage=str(have.get("storage")),
            replicas=copies if isinstance(copies := have.get("replicas"), int) else None,
        )

    def limits(self) -> dict[str, float | int | None]:
        return {"max_age_s": self.max_age_s, "max_bytes": self.max_bytes,
                "replicas": self.replicas}


@attrs.frozen
class SourceStream:
    """Name, subjects and retention of the source stream."""

    name: str = attrs.field(default="XY_SRC", validator=non_empty())
    subjects: list[str] = attrs.field(factory=lambda: list(DEFAULT_SUBJECTS),
                                      validator=subject_patterns())
    #: Retention by age (seconds) and by size (bytes); 0 = unlimited.
    max_age_s: int = attrs.field(default=3600, validator=in_range(0, 31_536_000))
    max_bytes: int = attrs.field(default=1 << 30, validator=in_range(0, 1 << 44))
    storage: str = attrs.field(default="file", validator=one_of(["file", "memory"]))

    def wanted(self) -> StreamSettings:
        return StreamSettings(
            subjects=tuple(self.subjects),
            max_age_s=float(self.max_age_s) if self.max_age_s else None,
            max_bytes=self.max_bytes or None,
            storage=self.storage,
        )

    async def ensure(self, js: JetStream, *, owner: bool, log: Logger) -> StreamState:
        """Create the stream if missing; reconcile an existing one (see the module doc)."""
        want = attrs.evolve(self.wanted(), replicas=js.replicas)
        storage: Literal["file", "memory"] = "memory" if self.storage == "memory" else "file"
        state, existing = await js.create_stream(
            self.name, list(self.subjects), max_age_s=want.max_age_s,
            max_bytes=want.max_bytes, storage=storage)
        if existing is None:
            return state
        have = StreamSettings.read(existing)
        subjects_ok = (set(have.subjects) == set(want.subjects) if owner
                       else set(want.subjects) <= set(have.subjects))
        if not subjects_ok:
            raise SourceStreamMismatch(
                f"source stream {self.name!r} exists with subjects {list(have.subjects)!r}, "
                f"this side expects {list(want.subjects)!r} (subjects are never changed "
                "automatically: align the configs or delete the stream)")
        if have.storage != want.storage:
            log.warning("source stream keeps its storage (it cannot change on a live stream)",
                        code=SOURCE_STREAM_RETENTION, stream=self.name,
                        storage=have.storage, configured=want.storage)
        old, new = have.limits(), want.limits()
        limits = {k: (old[k], new[k]) for k in ("max_age_s", "max_bytes", "replicas")
                  if old[k] != new[k] and (k != "replicas" or old[k] is not None)}
        if not limits:
            return state
        if not owner:
            log.info("source stream exists with other retention: left as it is (the "
                     "aggregator's ingest owns retention)", code=SOURCE_STREAM_RETENTION,
                     stream=self.name, existing={k: v[0] for k, v in limits.items()},
                     configured={k: v[1] for k, v in limits.items()})
            return state
        log.warning("source stream retention changed to the aggregator's configuration",
                    code=SOURCE_STREAM_RETENTION, stream=self.name,
                    old={k: v[0] for k, v in limits.items()},
                    new={k: v[1] for k, v in limits.items()})
        return await js.update_stream_limits(
            self.name, max_age_s=want.max_age_s, max_bytes=want.max_bytes,
            replicas=want.replicas)


__all__ = ["DEFAULT_SUBJECTS", "SourceStream", "StreamSettings"]
