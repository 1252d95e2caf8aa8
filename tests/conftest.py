"""Shared pytest fixtures. Each area keeps its fixtures in its own module, imported here."""

# --- NATS: real nats-server + bridge client (tests/_nats_fixtures.py) -------------------------
from _nats_fixtures import nats_bridge, nats_client, nats_server, nats_url

__all__ = ["nats_bridge", "nats_client", "nats_server", "nats_url"]
# --- end NATS ---------------------------------------------------------------------------------

# --- logs: folded repeats summarised within each test (tests/_log_fixtures.py) ---------------
from _log_fixtures import repeats_summarised_per_test

__all__ += ["repeats_summarised_per_test"]
