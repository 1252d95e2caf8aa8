"""What the gateway uses of NATS and JetStream, named in one place.

The gateway reads three things from JetStream — stored snapshots and checkpoints (direct get),
the feature-flag bucket and the aggregator's known-groups bucket (KV, watched) — and publishes
one (snapshot requests). The bridge types come from here so the modules that read the store
(:mod:`._snapfetch`, :mod:`._flagwatch`, :mod:`._groupwatch`) share one import and one backoff.
"""

from __future__ import annotations

from xypipe._retry import Backoff
from xypipe.abc import KeyValue, KvEntry, Msg, NatsClient

#: Store reads while JetStream is away (restarting, lame duck, node loss): quick at first, then
#: once a second.
STORE_BACKOFF = Backoff(initial_s=0.05, max_s=1.0)

__all__ = ["STORE_BACKOFF", "KeyValue", "KvEntry", "Msg", "NatsClient"]
