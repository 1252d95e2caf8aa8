"""Whether the parts the cluster's acceptance needs beside the NATS cluster are in this tree:
``[processes.NAME] workers`` (gateway workers) and ``ownership`` on the aggregator's ingest
(aggregators that split the groups). Tests that need them say so by name when they are not."""

from __future__ import annotations

import attrs

from xypipe._config import ProcessConfig
from xypipe._stages.ingest import IngestConfig

#: ``workers = N`` for a process.
HAS_WORKERS = "workers" in {a.name for a in attrs.fields(ProcessConfig)}
#: The ingest stage's ``ownership`` key (aggregators that split the groups).
HAS_OWNERSHIP = "ownership" in {a.name for a in attrs.fields(IngestConfig)}

MISSING = ", ".join(
    name for name, present in (("[processes.NAME] workers", HAS_WORKERS),
                               ("the ingest stage's ownership", HAS_OWNERSHIP))
    if not present)
