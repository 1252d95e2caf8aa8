"""What the hub needs from JetStream, fetched: snapshots for subscribers, re-anchoring reads.

The hub is sans-I/O: it says which groups a subscriber waits a snapshot for, which streams its
sequence checks want re-anchored and what it logged. :class:`SnapshotFetcher` carries that out:

* **snapshot look-ups** — the group's last stored snapshot by direct get, retried with backoff
  while JetStream is away and someone still waits for it; a subscriber is told with a
  ``SNAPSHOT_UNAVAILABLE`` error frame when there is none (yet);
* **snapshot requests** — asks the aggregator for a fresh one (fire and forget: it publishes on
  the snapshot subject, so the answer reaches every gateway);
* **re-anchoring reads** — JetStream's own record of a stream (the stored snapshot, then the
  aggregator's checkpoint), never the suspicious message (docs/protocol.md, "Sequence rules");
* the sequence checks' log lines and counts.

Fetches run in this object's own nursery (:meth:`run`), one per group or stream at a time.
"""

from __future__ import annotations

import trio

from xypipe._contracts import ContractDecoder
from xypipe._errors import (
    GW_ANCHOR_LOOKUP_FAILED,
    GW_BAD_MESSAGE,
    GW_DELTA_REJECTED,
    GW_REANCHORED,
    GW_SNAPSHOT_GET_FAILED,
    GW_SNAPSHOT_REJECTED,
    OWN_FENCED,
    BridgeError,
    ContractError,
)
from xypipe._gateway._gmetrics import CounterExport, GatewayMetrics
from xypipe._gateway._hub import BadMessage, Hub, ws_binary
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._store import STORE_BACKOFF, Msg, NatsClient
from xypipe._log import Logger
from xypipe._md.projection import is_projection, stream_subject
from xypipe._md.seqrules import STALE_FENCE
from xypipe.contracts import Delta, Error, ErrorCode, ServerFrame

__all__ = ["SnapshotFetcher", "checkpoint"]


def checkpoint(subject: str, raw: bytes, decoder: ContractDecoder) -> Delta:
    """A stored checkpoint: a Delta header (no symbols) with the stream's last sequence."""
    try:
        d = decoder.decode(Delta, raw, where=f"checkpoint {subject}")
    except ContractError as exc:
        raise BadMessage(subject, f"not a checkpoint Delta ({exc})") from None
    if d.seq <= 0:
        raise BadMessage(subject, f"checkpoint without seq (seq={d.seq})")
    return d


class SnapshotFetcher:
    def __init__(self, options: GatewayOptions, hub: Hub, metrics: GatewayMetrics, log: Logger,
                 decoder: ContractDecoder, nats: NatsClient | None) -> None:
        self.options = options
        self.hub = hub
        self.metrics = metrics
        self.log = log
        self.decoder = decoder
        self.nats = nats
        self._export = CounterExport()
        self._fetching: set[str] = set()
        self._anchoring: set[tuple[str, int]] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the fetch tasks until cancelled (without NATS nothing is ever fetched)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- after every batch the hub judged -----------------------------------------------------

    def after_sequence_checks(self, now: float) -> None:
        """Log what the hub's sequence checks did, export its counts, ask the aggregator for
        the snapshots subscribers wait for, and fetch the JetStream record of every stream the
        hub asked to re-anchor (docs/protocol.md, "Sequence rules")."""
        hub = self.hub
        for ev in hub.take_events(now):
            fields = {"group": ev.group, "shard": ev.shard, "reason": ev.reason,
                      "epoch": ev.epoch, "seq": ev.seq, "head_epoch": ev.head_epoch,
                      "head_seq": ev.head_seq}
            if ev.kind == "reanchored":
                self.log.warning("stream re-anchored from JetStream's record",
                                 code=GW_REANCHORED, **fields)
            elif ev.reason.endswith(":" + STALE_FENCE):
                # Head of a fence event: (the group's highest fence, the message's own).
                self.log.warning(f"{ev.reason.split(':')[0]} from a replaced owner dropped "
                                 "(fence below the group's)", code=OWN_FENCED,
                                 count=ev.count, group=ev.group, epoch=ev.epoch, seq=ev.seq,
                                 fence=ev.head_seq, highest_fence=ev.head_epoch)
            elif ev.reason.startswith("snapshot:"):
                self.log.warning("snapshot from a replaced epoch ignored",
                                 code=GW_SNAPSHOT_REJECTED, count=ev.count, **fields)
            else:
                self.log.warning("delta rejected by the sequence rules (never believed)",
                                 code=GW_DELTA_REJECTED, count=ev.count, **fields)
        st = hub.stats
        m = self.metrics
        self._export.export("verdicts", st.verdict_counts(), m.deltas)
        self._export.export("resyncs", st.resync_reasons, m.resyncs)
        self._export.export("reanchors", st.reanchors, m.reanchors)
        self._export.export("fenced", st.fenced, m.fenced)
        self._export.export("snapshots_rejected",
                            {r: n for (k, r), n in st.rejected.items() if k == "snapshot"},
                            m.snapshots_rejected)
        self._request_snapshots(hub.take_snapshot_requests(now))
        for key in hub.take_anchor_requests(now):
            if key in self._anchoring or self.nats is None or self._nursery is None:
                continue
            self._anchoring.add(key)
            self._nursery.start_soon(self._fetch_anchor, *key)

    def _request_snapshots(self, groups: list[str]) -> None:
        """Ask the aggregator for fresh snapshots; it publishes them on the snapshot subject,
        so the answer reaches every gateway (no reply needed). Fire and forget: a lost request
        is asked again while the subscriber still waits."""
        subject = self.options.snapshot_request_subject
        nats = self.nats
        if not groups or not subject or nats is None or not nats.is_connected:
            return
        for group in groups:
            try:
                nats.publish_nowait(subject, group.encode())
            except BridgeError as exc:
                self.log.warning("snapshot request not sent", code=exc.code, group=group,
                                 error=str(exc))
                return
            self.metrics.snapshot_requests.inc()

    # -- JetStream reads --------------------------------------------------------------------------

    async def _direct_get(self, nats: NatsClient, stream: str, subject: str, op: str
                          ) -> Msg | None:
        """The last message on ``subject`` in ``stream`` (``None``: none stored), timed into
        ``nats_req_latency{op}`` (``{op}_error`` when it fails, which it re-raises)."""
        t0 = trio.current_time()
        try:
            with trio.fail_after(self.options.nats_timeout_ms / 1000):
                msg = await nats.jetstream().direct_get_last(stream, subject)
        except (BridgeError, trio.TooSlowError):
            self.metrics.nats_req.labels(f"{op}_error").observe(trio.current_time() - t0)
            raise
        self.metrics.nats_req.labels(op).observe(trio.current_time() - t0)
        return msg

    async def _fetch_anchor(self, group: str, shard: int) -> None:
        """Feed the hub JetStream's record of one stream: the group's last stored snapshot,
        then the aggregator's last checkpoint of the stream (never the suspicious message)."""
        opts = self.options
        assert self.nats is not None
        try:
            records = [(opts.snapshot_stream, stream_subject(opts.snapshot_prefix, group))]
            if not is_projection(group):  # a projection has no checkpoints, only snapshots
                records.append((opts.checkpoint_stream,
                                f"{opts.checkpoint_prefix}.{group}.{shard}"))
            for stream, subject in records:
                try:
                    msg = await self._direct_get(self.nats, stream, subject, "anchor_get")
                except (BridgeError, trio.TooSlowError) as exc:
                    self.log.warning("reading a stream's record to re-anchor it failed",
                                     code=GW_ANCHOR_LOOKUP_FAILED, stream=stream,
                                     subject=subject, error=str(exc))
                    continue
                if msg is None:
                    continue
                try:
                    if stream == opts.snapshot_stream:
                        self.hub.on_snapshot(subject, msg.data, trio.current_time())
                    else:
                        cp = checkpoint(subject, msg.data, self.decoder)
                        self.hub.on_checkpoint(group, shard, cp.epoch, cp.seq,
                                               trio.current_time())
                except BadMessage as exc:
                    self.metrics.bad_input.labels("checkpoint" if stream != opts.snapshot_stream
                                                  else "snapshot").inc()
                    self.log.warning("stored record unusable", code=GW_BAD_MESSAGE,
                                     subject=exc.subject, reason=exc.reason)
        finally:
            self._anchoring.discard((group, shard))
        self.after_sequence_checks(trio.current_time())

    # -- snapshots for subscribers ----------------------------------------------------------------

    def ensure_snapshot(self, group: str) -> None:
        """Fetch the group's last snapshot by JetStream direct get if the cache has none."""
        if not self.hub.needs_snapshot(group) or group in self._fetching:
            return
        if self.nats is None or self._nursery is None:
            return
        self._fetching.add(group)
        self._nursery.start_soon(self._fetch_snapshot, self.nats, group)

    async def _fetch_snapshot(self, nats: NatsClient, group: str) -> None:
        """Direct get of the group's last snapshot, retried with backoff while the store cannot
        be reached (JetStream restarting, lame duck, node loss) for as long as someone waits
        for the group and no live snapshot has arrived: a subscriber who asked while
        JetStream was away gets the snapshot once it is back."""
        subject = stream_subject(self.options.snapshot_prefix, group)
        attempt = 0
        try:
            while self.hub.needs_snapshot(group) and self.hub.subscribers.get(group):
                try:
                    msg = await self._direct_get(nats, self.options.snapshot_stream, subject,
                                                 "direct_get")
                except (BridgeError, trio.TooSlowError) as exc:
                    self.metrics.snapshot_get_failures.inc()
                    self.metrics.snapshot_lookups.labels("failed").inc()
                    attempt += 1
                    delay = STORE_BACKOFF.delay(attempt)
                    self.log.warning("snapshot direct get failed; retrying",
                                     code=GW_SNAPSHOT_GET_FAILED, subject=subject,
                                     stream=self.options.snapshot_stream, attempt=attempt,
                                     retry_in_ms=round(delay * 1000),
                                     error=str(exc) or "timed out",
                                     error_code=exc.code if isinstance(exc, BridgeError)
                                     else None)
                    if attempt == 1:
                        self._snapshot_unavailable(
                            group, "the snapshot store could not be reached (retrying)")
                    await trio.sleep(delay)
                    continue
                self.metrics.snapshot_lookups.labels("missing" if msg is None else "found").inc()
                if attempt:
                    self.log.info("snapshot direct get succeeded after retries",
                                  subject=subject, attempts=attempt)
                self._stored_snapshot(group, subject, msg)
                return
        finally:
            self._fetching.discard(group)

    def _stored_snapshot(self, group: str, subject: str, msg: Msg | None) -> None:
        if msg is not None:
            try:
                self.hub.on_snapshot(subject, msg.data, trio.current_time())
            except BadMessage as exc:
                self.metrics.bad_input.labels("snapshot").inc()
                self.log.warning("stored snapshot unusable", code=GW_BAD_MESSAGE,
                                 subject=subject, reason=exc.reason)
                msg = None
        if msg is None and self.hub.needs_snapshot(group):
            self._snapshot_unavailable(group, "no snapshot stored yet")

    def _snapshot_unavailable(self, group: str, why: str) -> None:
        frame = ServerFrame(error=Error(
            code=ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE, group=group,
            message=f"group {group!r}: {why}; the subscription stays open and the data "
                    "starts with the next snapshot available",
        )).SerializeToString()
        data = ws_binary(frame)
        for ob in self.hub.subscribers.get(group, set()):
            ob.push_control(data)
