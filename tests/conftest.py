"""Shared pytest fixtures. Each area keeps its fixtures in its own module, imported here:
NATS (a real nats-server and bridge client, tests/_nats_fixtures.py), logs (folded repeats
summarised within each test, tests/_log_fixtures.py) and secrets (no seed, JWT, private key or
test password in any log line, tests/_secret_scan.py)."""

from _log_fixtures import repeats_summarised_per_test
from _nats_fixtures import nats_bridge, nats_client, nats_server, nats_url
from _secret_scan import no_secret_in_any_log, secret_scan

__all__ = [
    "nats_bridge",
    "nats_client",
    "nats_server",
    "nats_url",
    "no_secret_in_any_log",
    "repeats_summarised_per_test",
    "secret_scan",
]
