"""The aggregator's known groups, as a gateway follows them in their JetStream KV bucket.

Every session reads one shared :class:`~._session.KnownGroups`; this watch keeps it equal to
the bucket. Until the bucket is read once the gateway accepts every well-formed group (it
cannot tell yet; docs/protocol.md, "Groups").
"""

from __future__ import annotations

import trio

from xypipe._errors import (
    GW_KNOWN_GROUPS_LOADED,
    GW_KNOWN_GROUPS_WATCH_FAILED,
    BridgeError,
    NatsJsUnavailable,
    NatsNotFound,
    NatsTimeout,
)
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._session import KnownGroups
from xypipe._gateway._store import STORE_BACKOFF, KeyValue, NatsClient
from xypipe._log import Logger
from xypipe._retry import Backoff, retrying

__all__ = ["KnownGroupsWatch"]

#: Between attempts to watch the bucket again after a watch failed.
_WATCH_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)


class KnownGroupsWatch:
    def __init__(self, bucket: str, known: KnownGroups, metrics: GatewayMetrics, log: Logger,
                 *, timeout_s: float) -> None:
        self.bucket = bucket
        self.known = known
        self.metrics = metrics
        self.log = log
        self.timeout_s = timeout_s
        #: Set (and replaced) whenever the known-groups list changes.
        self.changed = trio.Event()
        metrics.known_groups.set(-1)

    async def run(self, nats: NatsClient) -> None:
        """Keep :attr:`known` equal to the bucket until cancelled."""
        bucket = self.bucket
        js = nats.jetstream(timeout=self.timeout_s)

        async def open_and_read() -> tuple[KeyValue, list[str]]:
            # The aggregator creates and writes the bucket; a gateway only reads it (least
            # privilege: docs/security.md). One that starts first waits for it, accepting every
            # well-formed group meanwhile, as before the first read.
            try:
                kv = await js.kv(bucket, create=False)
            except NatsNotFound as exc:
                if isinstance(exc, NatsJsUnavailable):
                    raise
                raise NatsTimeout(f"known-groups bucket {bucket!r} does not exist yet (the "
                                  "aggregator creates it with its first group)") from exc
            return kv, await kv.keys()

        failures = 0
        while True:
            kv, keys = await retrying(
                f"read the known-groups bucket {bucket!r}", open_and_read,
                backoff=STORE_BACKOFF, log=self.log, gave_up=lambda: bool(nats.closed))
            groups = set(keys)
            self._set(groups)
            try:
                # The watch repeats the current values, then every change; it survives
                # reconnects itself. Starting it while the server restarts can still fail
                # (its consumer not found): then the list stays as it is and is read again.
                async with kv.watch(">") as watch:
                    failures = 0
                    async for entry in watch:
                        if entry.op == "PUT":
                            if entry.key in groups:
                                continue
                            groups.add(entry.key)
                        else:
                            groups.discard(entry.key)
                        self._set(groups)
            except BridgeError as exc:
                if nats.closed:
                    raise
                self.log.warning("known-groups watch failed; reading the bucket again",
                                 code=GW_KNOWN_GROUPS_WATCH_FAILED, bucket=bucket,
                                 error=str(exc))
                failures += 1
                await trio.sleep(_WATCH_BACKOFF.delay(failures))

    def _set(self, groups: set[str]) -> None:
        first = self.known.groups is None
        self.known.groups = frozenset(groups)
        self.metrics.known_groups.set(len(groups))
        self.changed.set()
        self.changed = trio.Event()
        if first:
            self.log.info("known groups loaded", code=GW_KNOWN_GROUPS_LOADED,
                          bucket=self.bucket, groups=sorted(groups))
