"""The 3-node cluster fixtures (tests/_nats_fixtures.py) for the tests of this directory, and
the chaos suite's browser-like clients and market feed (tests/chaos/), which the cluster's
end-to-end test drives the same way."""

import sys
from pathlib import Path

from _nats_fixtures import nats_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

__all__ = ["nats_cluster"]
