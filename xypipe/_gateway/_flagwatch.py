"""The feature flags, kept equal to their JetStream KV bucket.

:class:`FlagBoard` holds the current value of every flag (:mod:`._flags` says what they mean)
and a version that moves with every change; a gateway's connections read it through the narrow
:class:`~._wire_core.FlagView` and apply a new version when they see one. Its watch is the one
place a change is applied — whoever wrote it, through the admin API or straight into the
bucket.

A board reads or writes (``mode``). A gateway's board only reads: NATS lets the gateway watch
and read the bucket, never write it (docs/security.md), so it waits for the bucket to exist
and audits every change it applies. The admin process's board (the ``flag_admin`` stage)
creates the bucket and backs its route's writes, which fail closed (docs/architecture.md,
"Admin writes fail closed"): the route writes conditionally on the revision this board last
saw, and a write it answered as failed is remembered here; if that write reaches the store
after all, the watch holds it back and reverts it with a write conditional on the late
revision, so a newer change by anyone wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs
import trio

from xypipe._audit import AuditLog
from xypipe._contracts import ContractDecoder
from xypipe._degrade import Level
from xypipe._errors import (
    ADM_FLAG_APPLIED,
    ADM_LATE_WRITE_REVERTED,
    ADM_REVERT_FAILED,
    FLAG_UNUSABLE,
    FLAG_WATCH_RESTARTED,
    BridgeError,
    ContractError,
    KvRevisionConflict,
    NatsJsUnavailable,
    NatsNotFound,
    NatsTimeout,
)
from xypipe._gateway._flags import (
    FlagError,
    FlagValue,
    defaults,
    disabled_groups,
    forced_level,
)
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._store import STORE_BACKOFF, KeyValue, KvEntry, NatsClient
from xypipe._log import Logger
from xypipe._retry import Backoff, retrying

__all__ = ["REVERT_PRINCIPAL", "FlagBoard"]

#: ``updated_by`` of the value a gateway writes back over a late change.
REVERT_PRINCIPAL = "xypipe-gateway (revert of a late change)"
_MAX_IN_DOUBT = 64
#: Between attempts to start the watch again after it failed.
_WATCH_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)
_REVERT_ATTEMPTS = 8


@attrs.frozen
class _InDoubt:
    expected: int


class FlagBoard:
    def __init__(
        self,
        bucket: str,
        metrics: GatewayMetrics,
        audit: AuditLog,
        log: Logger,
        decoder: ContractDecoder,
        *,
        timeout_s: float,
        wall: Callable[[], float],
        on_change: Callable[[], None],
        mode: Literal["read", "write"] = "read",
    ) -> None:
        self.bucket = bucket
        self.timeout_s = timeout_s
        #: ``read``: a gateway's (waits for the bucket, audits what it applies); ``write``:
        #: the admin process's (creates the bucket, remembers and reverts its failed writes).
        self.mode = mode
        self.metrics = metrics
        self.audit = audit
        self.log = log
        self.decoder = decoder
        self.wall = wall
        #: Called after every applied change (the server re-applies flags to connections).
        self.on_change = on_change
        self.values: dict[str, FlagValue] = defaults()
        #: Moves with every applied change; a connection applies flags when it sees a new one.
        self.version = 0
        #: The bucket, once the watch has opened it (None: no NATS, flags are local).
        self.kv: KeyValue | None = None
        #: Whether the watch is live (every change to the bucket from now on is seen).
        self.watching = False
        #: The last revision of each flag key seen in the store (watched or written here):
        #: what the next conditional write expects.
        self._revisions: dict[str, int] = {}
        #: Flag writes answered as failed that might still reach the store.
        self._in_doubt: dict[tuple[str, str, int], _InDoubt] = {}

    # -- what connections read (FlagView) -------------------------------------------------------

    def __getitem__(self, name: str) -> FlagValue:
        return self.values[name]

    def forced_level(self) -> Level | None:
        return forced_level(self.values)

    def disabled_groups(self) -> frozenset[str]:
        return disabled_groups(self.values)

    # -- what the admin route writes --------------------------------------------------------------

    def expected_revision(self, name: str) -> int:
        """The revision a conditional write of ``name`` expects (0: the key does not exist)."""
        return self._revisions.get(name, 0)

    def written(self, name: str, revision: int) -> None:
        """A conditional write of ``name`` succeeded at ``revision`` (the watch applies it)."""
        self._revisions[name] = max(self._revisions.get(name, 0), revision)

    def remember_in_doubt(self, flag: FlagValue, expected: int) -> None:
        """A write that failed after it may have left: if it ever lands it is reverted. Bounded:
        the oldest record goes first (its write can only land while the key stays at its
        expected revision, which the next successful change ends)."""
        self._in_doubt[(flag.name, flag.updated_by, flag.updated_at_us)] = _InDoubt(expected)
        while len(self._in_doubt) > _MAX_IN_DOUBT:
            del self._in_doubt[next(iter(self._in_doubt))]

    def apply(self, flag: FlagValue) -> None:
        """Make ``flag`` current here (from the watch, or directly when there is no store)."""
        self.values[flag.name] = flag
        self.version += 1
        self.on_change()

    # -- the watch --------------------------------------------------------------------------------

    async def watch(self, nats: NatsClient, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the bucket (waiting for JetStream, counted and logged, rather than failing the
        gateway), then apply every change until cancelled; reverts run in this task's nursery."""
        js = nats.jetstream(timeout=self.timeout_s)
        bucket = self.bucket
        t0 = trio.current_time()

        async def open_bucket() -> KeyValue:
            if self.mode == "write":
                return await js.kv(bucket, history=16)
            try:
                return await js.kv(bucket, create=False)
            except NatsNotFound as exc:
                if isinstance(exc, NatsJsUnavailable):
                    raise
                # A gateway may only read the bucket; the admin process creates it.
                raise NatsTimeout(f"feature-flag bucket {bucket!r} does not exist yet (the "
                                  "flag_admin stage creates it)") from exc

        kv: KeyValue = await retrying(
            f"open the feature-flag bucket {bucket!r}", open_bucket, backoff=STORE_BACKOFF,
            log=self.log, on_failure=lambda exc: self.metrics.nats_req.labels(
                "kv_open_error").observe(trio.current_time() - t0),
            gave_up=lambda: bool(nats.closed))
        self.kv = kv
        self.metrics.nats_req.labels("kv_open").observe(trio.current_time() - t0)
        started = False
        failures = 0
        async with trio.open_nursery() as reverts:
            while True:
                try:
                    # The watch repeats the current values, then every change; it survives
                    # reconnects itself. Starting it while the server is away can still fail:
                    # the flags in force stay as they are and the watch is started again.
                    async with kv.watch(">") as watch:
                        self.watching = True
                        if not started:
                            started = True
                            task_status.started()
                        failures = 0
                        async for entry in watch:
                            self.entry(entry, reverts)
                except BridgeError as exc:
                    self.watching = False
                    if nats.closed:
                        raise
                    failures += 1
                    self.log.warning("feature-flag watch failed; starting it again",
                                     code=FLAG_WATCH_RESTARTED, bucket=bucket, error=str(exc),
                                     attempt=failures)
                    await trio.sleep(_WATCH_BACKOFF.delay(failures))

    def entry(self, entry: KvEntry, reverts: trio.Nursery) -> None:
        """One entry from the bucket's watch: apply it and audit it (whoever wrote it), or —
        when it is a change this gateway answered as failed — hold it back and revert it."""
        name = entry.key
        self._revisions[name] = max(self._revisions.get(name, 0), entry.revision)
        current = self.values.get(name)
        if current is not None and entry.revision <= current.revision:
            return  # already applied (a re-created watch delivers the current values again)
        if entry.op != "PUT":
            if current is None:
                return
            flag = FlagValue(name, defaults()[name].value, revision=entry.revision)
        else:
            try:
                flag = FlagValue.decode(entry.value, entry.revision, decoder=self.decoder)
            except (FlagError, ContractError) as exc:
                self.metrics.bad_input.labels("feature_flag").inc()
                self.log.warning("unusable feature flag in the bucket", code=FLAG_UNUSABLE,
                                 key=entry.key, error=str(exc))
                return
        doubt = self._in_doubt.pop((flag.name, flag.updated_by, flag.updated_at_us), None)
        # A write in doubt expected an older revision: once the key moved past it without
        # that write, the server can no longer accept it.
        for key, d in list(self._in_doubt.items()):
            if key[0] == name and d.expected < entry.revision:
                del self._in_doubt[key]
        if doubt is not None and current is not None:
            # Answered as failed, arrived anyway: never applied here, and taken back out.
            self.values[name] = attrs.evolve(current, revision=entry.revision)
            self.metrics.flag_changes.labels("late_reverted").inc()
            self.audit.record(
                "feature flag change answered as failed reached the store late: not applied, "
                "reverting", code=ADM_LATE_WRITE_REVERTED, action="admin.flag",
                outcome="reverted", sub=flag.updated_by, flag=name,
                late_value=flag.value, restored=current.value, revision=entry.revision)
            reverts.start_soon(self._revert, current, entry.revision)
            return
        self.apply(flag)
        if self.mode == "write":
            return  # the gateways audit what they apply; the route audited the request
        old = current.value if current is not None else None
        self.audit.record(
            "feature flag change applied", code=ADM_FLAG_APPLIED,
            action="admin.flag.applied", outcome="applied",
            sub=flag.updated_by or "(unknown: written outside the admin API)",
            flag=name, old=old, new=flag.value, revision=entry.revision,
            deleted=entry.op != "PUT", at_us=flag.updated_at_us)

    async def _revert(self, restore: FlagValue, late_revision: int) -> None:
        """Put ``restore`` back over a late write at ``late_revision``, conditional on it: a
        newer change by anyone wins over the revert, and a retry never reverts twice."""
        value = FlagValue(restore.name, restore.value, REVERT_PRINCIPAL,
                          int(self.wall() * 1e6))
        kv = self.kv
        assert kv is not None
        delay = 0.25
        for attempt in range(1, _REVERT_ATTEMPTS + 1):
            try:
                with trio.fail_after(self.timeout_s * 2):
                    await kv.update(restore.name, value.encode(), last=late_revision,
                                    headers={"Xy-Principal": REVERT_PRINCIPAL})
                return
            except KvRevisionConflict:
                return  # the key moved on: another gateway reverted it, or a newer change won
            except (BridgeError, trio.TooSlowError) as exc:
                self.log.warning("could not revert a late feature flag change yet",
                                 code=ADM_REVERT_FAILED, flag=restore.name, attempt=attempt,
                                 error=str(exc))
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.audit.record("late feature flag change could not be reverted", code=ADM_REVERT_FAILED,
                          severity="error", action="admin.flag", outcome="revert_failed",
                          sub=REVERT_PRINCIPAL, flag=restore.name, revision=late_revision)
