"""Shared pytest fixtures. Each area keeps its fixtures in its own module, imported here."""

# --- NATS: real nats-server + bridge client (tests/_nats_fixtures.py) -------------------------
from _nats_fixtures import nats_bridge, nats_client, nats_server, nats_url

__all__ = ["nats_bridge", "nats_client", "nats_server", "nats_url"]
# --- end NATS ---------------------------------------------------------------------------------

# --- secrets: no seed, JWT, private key or test password in any log line (tests/_secret_scan.py)
from _secret_scan import no_secret_in_any_log, secret_scan

__all__ += ["no_secret_in_any_log", "secret_scan"]
# --- end secrets ------------------------------------------------------------------------------
