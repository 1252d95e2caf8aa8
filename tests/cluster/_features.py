"""Whether the parts the cluster's acceptance needs beside the NATS cluster are in this tree:
``[processes.NAME] workers`` (gateway workers) and ``ownership`` on the aggregator's ingest
(aggregators that split the groups). Tests that need them say so by name when they are not."""

from __future__ import annotations

import importlib.util

import attrs

from xypipe._config import ProcessConfig

#: ``workers = N`` for a process.
HAS_WORKERS = "workers" in {a.name for a in attrs.fields(ProcessConfig)}
#: The ownership engine (leases in JetStream KV) and the ingest stage's ``ownership`` key.
HAS_OWNERSHIP = importlib.util.find_spec("xypipe._ownership") is not None

MISSING = ", ".join(
    name for name, present in (("[processes.NAME] workers", HAS_WORKERS),
                               ("ingest ownership (xypipe._ownership)", HAS_OWNERSHIP))
    if not present)
