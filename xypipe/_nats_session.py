"""One process's NATS connection, held for the life of its runner: signed in as its role, every
refusal counted, a rotated ``.creds`` file followed.

The runner starts :func:`hold_nats` in its services nursery; what it signs in with comes from
:func:`xypipe._nats_signin.sign_in`. Beside a connection opened with a ``.creds`` file,
:func:`xypipe._creds.follow_creds` watches that file: a rotated one (``xypipe creds rotate``)
makes the connection sign in again before the JWT in use expires — no restart.

Every refusal by the server — a sign-in (auth, expired, revoked, TLS), a publish, a
subscription, a JetStream API call — is audited by the bridge (the same audit line shape as the
gateway's ACL denials) and counted here in one metric, ``nats_refusals_total{reason, op}``.
"""

from __future__ import annotations

import time
from functools import partial

import trio
from prometheus_client import Counter

from xypipe._config import NatsConfig
from xypipe._creds import follow_creds
from xypipe._errors import EMB_SERVER_CHANGED
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._nats import NatsClient, Refusal, connect
from xypipe._nats._refusal import Op, Reason
from xypipe._nats_signin import SignIn

__all__ = ["REFUSALS", "hold_nats", "refusal_counter"]

_log = get_logger("nats")

#: Every (reason, operation) the server can refuse: a sign-in for its credentials or TLS, an
#: operation for its permissions.
REFUSALS: tuple[tuple[Reason, Op], ...] = (
    ("auth", "connect"), ("expired", "connect"), ("revoked", "connect"), ("tls", "connect"),
    ("permission", "publish"), ("permission", "subscribe"), ("permission", "jetstream"))


def refusal_counter(metrics: Metrics) -> Counter:
    """``nats_refusals_total{reason, op}`` of this process's registry, every pair that can
    happen at 0 from the start (alert rules take its increase)."""
    refusals = metrics.counter(
        "nats_refusals", "Operations and sign-ins the NATS server refused this process, by "
        "reason (auth, permission, tls, expired, revoked) and operation (connect, publish, "
        "subscribe, jetstream); each is also an audit line", ["reason", "op"])
    for pair in REFUSALS:
        refusals.labels(*pair)
    return refusals


async def hold_nats(
    url: str, cfg: NatsConfig, signin: SignIn, metrics: Metrics, *,
    task_status: trio.TaskStatus[NatsClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect as ``signin`` says, hand the client to the caller and hold it until cancelled
    (following its ``.creds`` file, if it has one)."""
    refused = refusal_counter(metrics)

    def count(refusal: Refusal) -> None:
        refused.labels(refusal.reason, refusal.op).inc()

    signin.check(time.time())
    _log.info("signing in to NATS", role=signin.role, method=signin.method,
              creds=str(signin.creds) if signin.creds else None, nkey_file=signin.nkey,
              tls=signin.tls, client_cert=str(signin.cert.cert) if signin.cert else None,
              inbox_prefix=signin.inbox_prefix)
    async with connect(
        url.split(",") if "," in url else url, name=cfg.name, user=signin.user,
        password=signin.password, token=signin.token,
        creds=str(signin.creds) if signin.creds else None, nkeys_seed=signin.nkey,
        inbox_prefix=signin.inbox_prefix, tls=signin.ssl_context(),
        principal=signin.principal, on_refusal=count,
        explain_refusal=lambda refusal: signin.explain(refusal, time.time()),
        connect_timeout=cfg.connect_timeout_ms / 1000,
        reconnect_wait=cfg.reconnect_wait_ms / 1000,
        max_reconnect_attempts=cfg.max_reconnect_attempts,
        # Every stream and bucket this process creates keeps this many copies.
        replicas=cfg.stream_replicas,
    ) as nc, trio.open_nursery() as nursery:
        if signin.creds is not None:
            await nursery.start(partial(
                follow_creds, signin.creds, nc, poll_s=cfg.creds_poll_ms / 1000,
                warn_before_s=cfg.creds_warn_s))
        nursery.start_soon(_follow_server, nc, metrics)
        task_status.started(nc)
        await trio.sleep_forever()


async def _follow_server(nc: NatsClient, metrics: Metrics) -> None:
    """Count and log every move of the connection to another server (a cluster node lost:
    nats-py reconnects to the next URL of the list, or one the cluster told it about)."""
    moves = metrics.counter(
        "nats_server_changes", "Times this process's NATS connection came back on another "
        "server than the one it lost (a cluster node down)")
    current = nc.connected_url
    with nc.events() as events:
        async for event in events:
            if event.kind != "reconnected":
                continue
            now = nc.connected_url
            if now != current:
                moves.inc()
                _log.warning("the NATS connection moved to another server", code=EMB_SERVER_CHANGED,
                             lost=current, server=now)
            current = now
