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
* storage differs: kept as it is (it cannot change on a live stream, and it decides durability,
  not what is captured), logged with ``XY-AGG-011``. A stream a publisher created with the
  default file storage stays file-backed for an aggregator configured with memory storage.
"""

from __future__ import annotations

from typing import Any

import attrs

from xypipe._errors import SOURCE_STREAM_RETENTION, SourceStreamMismatch
from xypipe._nats import StreamState
from xypipe._validate import in_range, non_empty, one_of, subject_patterns

DEFAULT_SUBJECTS = ("xy.src.>", "xy.ref.>")


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

    def wanted(self) -> dict[str, Any]:
        return {
            "subjects": list(self.subjects),
            "max_age_s": float(self.max_age_s) if self.max_age_s else None,
            "max_bytes": self.max_bytes or None,
            "storage": self.storage,
        }

    async def ensure(self, js: Any, *, owner: bool, log: Any) -> StreamState:
        """Create the stream if missing; reconcile an existing one (see the module doc)."""
        want = self.wanted()
        state, have = await js.create_stream(
            self.name, list(self.subjects), max_age_s=want["max_age_s"],
            max_bytes=want["max_bytes"], storage=self.storage)
        if have is None:
            return state  # type: ignore[no-any-return]
        subjects_ok = (set(have["subjects"]) == set(want["subjects"]) if owner
                       else set(want["subjects"]) <= set(have["subjects"]))
        if not subjects_ok:
            raise SourceStreamMismatch(
                f"source stream {self.name!r} exists with subjects {have['subjects']!r}, this "
                f"side expects {want['subjects']!r} (subjects are never changed "
                "automatically: align the configs or delete the stream)")
        if have["storage"] != want["storage"]:
            log.warning("source stream keeps its storage (it cannot change on a live stream)",
                        code=SOURCE_STREAM_RETENTION, stream=self.name,
                        storage=have["storage"], configured=want["storage"])
        limits = {k: (have[k], want[k]) for k in ("max_age_s", "max_bytes")
                  if have[k] != want[k]}
        if not limits:
            return state  # type: ignore[no-any-return]
        if not owner:
            log.info("source stream exists with other retention: left as it is (the "
                     "aggregator's ingest owns retention)", code=SOURCE_STREAM_RETENTION,
                     stream=self.name, existing={k: v[0] for k, v in limits.items()},
                     configured={k: v[1] for k, v in limits.items()})
            return state  # type: ignore[no-any-return]
        log.warning("source stream retention changed to the aggregator's configuration",
                    code=SOURCE_STREAM_RETENTION, stream=self.name,
                    old={k: v[0] for k, v in limits.items()},
                    new={k: v[1] for k, v in limits.items()})
        return await js.update_stream_limits(  # type: ignore[no-any-return]
            self.name, max_age_s=want["max_age_s"], max_bytes=want["max_bytes"])


__all__ = ["DEFAULT_SUBJECTS", "SourceStream"]
