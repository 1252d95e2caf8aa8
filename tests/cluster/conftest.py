"""The 3-node cluster fixtures (tests/_nats_fixtures.py) for the tests of this directory."""

from _nats_fixtures import nats_cluster

__all__ = ["nats_cluster"]
