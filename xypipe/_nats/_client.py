"""The public NATS client: connect, publish, subscribe, request, events, statistics.

A thin face over one :class:`~xypipe._nats._bridge.Bridge`; JetStream and KV hang off it
(:meth:`NatsClient.jetstream`).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
from nats.aio.subscription import Subscription as _AioSubscription

from xypipe._bridge_portal import BridgeKind, open_portal
from xypipe._errors import BridgeError, NatsConnectionError, NatsRefused
from xypipe._nats._boundary import check_subject, from_aio
from xypipe._nats._bridge import Bridge, ConnectOptions
from xypipe._nats._inbox import Inbox, Subscription
from xypipe._nats._jetstream import JetStream
from xypipe._nats._refusal import Refusal
from xypipe._nats._types import BridgeEvent, BridgeStatistics, Msg

__all__ = ["NatsClient", "connect"]

# Messages held between nats-py and a Trio consumer (the bridge's part of the buffer) ...
_DEFAULT_MAX_PENDING = 8192
# ... and in nats-py's own per-subscription queue behind it; past this NATS's slow-consumer rule
# drops messages.
_DEFAULT_CLIENT_PENDING = 65536
_CLIENT_PENDING_BYTES = 64 * 1024 * 1024


class NatsClient:
    """A connected client. Create it with :func:`connect`; every method is called from Trio."""

    def __init__(
        self, bridge: Bridge, *, inbox_prefix: str = "_INBOX", replicas: int = 1
    ) -> None:
        self._bridge = bridge
        self._out = bridge.outbox
        #: Where replies to this client's requests arrive (``<prefix>.<unique>``).
        self.inbox_prefix = inbox_prefix
        #: Copies each stream and KV bucket created through :meth:`jetstream` keeps unless the
        #: call says otherwise (``[nats] replicas``: 3 on a 3-node cluster, 1 on one server).
        self.replicas = replicas

    @property
    def bridge(self) -> BridgeKind:
        """Which Trio/asyncio bridge this client runs on."""
        return self._bridge.kind

    @property
    def closed(self) -> bool:
        """Closed for good (by us, or reconnect attempts exhausted): retrying is pointless."""
        return self._bridge.closed

    @property
    def is_connected(self) -> bool:
        return self._bridge.is_connected

    @property
    def connected_url(self) -> str | None:
        """The server this client is connected to now (one of a cluster's), or None."""
        return self._bridge.connected_url()

    def events(self, buffer: int = 64) -> trio.MemoryReceiveChannel[BridgeEvent]:
        """A receive channel of :class:`BridgeEvent` from now on; closed with the client. A
        consumer that falls ``buffer`` events behind misses events (counted in statistics)."""
        return self._bridge.events(buffer)

    def statistics(self) -> BridgeStatistics:
        b, out = self._bridge, self._out
        return BridgeStatistics(
            connected=b.is_connected,
            publish_queued=out.queued,
            published=out.published,
            publish_dropped=out.dropped,
            delivered_msgs=sum(i.consumed for i in b.inboxes),
            delivered_batches=sum(i.batches for i in b.inboxes),
            slow_consumer_drops=b.slow_consumer_drops,
            reconnects=b.reconnects,
            events_dropped=b.events_dropped,
            permission_denied=b.permission_denied,
            refusals=b.refusals,
        )

    # -- publish -----------------------------------------------------------------------------
    def publish_nowait(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Queue one message for the next batch to nats-py. Raises ``NatsBackpressure`` when the
        queue holds ``publish_queue`` messages, ``BridgeError`` for a bad subject or payload."""
        self._out.publish_nowait(subject, payload, headers)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Like :meth:`publish_nowait`, but waits for room in the queue instead of raising."""
        await self._out.publish(subject, payload, headers)

    async def flush(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (see module doc)
        """Hand everything queued to nats-py and wait until the server has seen it."""
        await self._bridge.call("flush", self._out.aio_flush, timeout)
        self._out.raise_failure()

    # -- subscribe / request -----------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self,
        subject: str,
        queue: str | None = None,
        max_batch: int = 256,
        *,
        max_pending: int = _DEFAULT_MAX_PENDING,
        client_pending: int = _DEFAULT_CLIENT_PENDING,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the duration of the block; the subscription yields ``list[Msg]``.

        ``max_pending`` bounds the messages between nats-py and the consumer, ``client_pending``
        those queued inside nats-py behind them; beyond both, messages are dropped as a slow
        consumer (see module doc). The server has registered the interest when the block starts.
        """
        bridge = self._bridge
        inbox: Inbox[Msg] = Inbox(bridge.portal, max_pending, max_batch,
                                  f"subscription {subject}")
        what = f"subscribe to {subject!r}"

        async def _sub() -> _AioSubscription:
            sub = await bridge.aio.subscribe(
                subject,
                queue=queue or "",
                cb=inbox.aio_put_msg,
                pending_msgs_limit=client_pending,
                pending_bytes_limit=_CLIENT_PENDING_BYTES,
            )
            # Make the SUB reach the server before the caller publishes anything.
            await bridge.aio.flush()
            return sub

        aio_sub = await bridge.call(what, _sub)
        bridge.inboxes.add(inbox)
        try:
            yield Subscription(inbox, subject, queue)
        finally:
            bridge.inboxes.discard(inbox)
            inbox.close()
            await bridge.quietly(f"unsubscribe from {subject!r}", aio_sub.unsubscribe)

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float = 1.0,  # noqa: ASYNC109 (see module doc)
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """Send a request and await one reply; ``NatsTimeout``/``NatsNoResponders`` otherwise."""
        check_subject(subject)
        bridge = self._bridge

        async def _req() -> Msg:
            return from_aio(
                await bridge.aio.request(subject, payload, timeout=timeout, headers=headers)
            )

        return await self._bridge.call(f"request to {subject!r}", _req)

    async def reconnect(self) -> None:
        """Drop the connection and sign in again: credentials are read anew (a rotated
        ``.creds`` file takes effect), subscriptions are restored, publishes meanwhile are
        buffered. Returns once the reconnect is under way; a ``reconnected`` event follows."""
        bridge = self._bridge

        async def _force() -> None:
            await bridge.aio.force_reconnect()

        await bridge.call("reconnect", _force)

    def jetstream(self, *, timeout: float = 5.0) -> JetStream:
        """The JetStream API on this connection (``timeout`` bounds each API call); streams
        and buckets it creates keep :attr:`replicas` copies unless a call names its own."""
        return JetStream(self._bridge, timeout, replicas=self.replicas)


@asynccontextmanager
async def connect(
    servers: str | list[str],
    *,
    name: str = "xypipe",
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    creds: str | None = None,
    nkeys_seed: str | None = None,
    inbox_prefix: str = "_INBOX",
    on_permission_denied: Callable[[str], None] | None = None,
    on_refusal: Callable[[Refusal], None] | None = None,
    explain_refusal: Callable[[Refusal], Refusal] | None = None,
    principal: str | None = None,
    tls: ssl.SSLContext | None = None,
    connect_timeout: float = 2.0,
    reconnect_wait: float = 0.25,
    max_reconnect_attempts: int = -1,
    reconnect_buffer_bytes: int = 8 * 1024 * 1024,
    publish_queue: int = 65536,
    close_timeout: float = 2.0,
    connect_deadline: float | None = None,
    bridge: BridgeKind = "trio-asyncio",
    replicas: int = 1,
) -> AsyncIterator[NatsClient]:
    """Connect to NATS for the duration of the block (a Trio async context manager).

    ``servers``: one URL or a list. ``creds``: path of a ``.creds`` file (JWT + NKey seed);
    ``nkeys_seed``: path of a file holding an NKey seed (the embedded bus's role keys).
    ``inbox_prefix``: where request replies arrive (a role's own prefix on the embedded bus).
    ``on_permission_denied("publish" | "subscribe")`` is called for every operation the server
    refuses under the user's permissions (also logged ``XY-NATS-008`` and counted in
    :meth:`NatsClient.statistics`). ``on_refusal`` is called with every refusal of any kind
    (:class:`~xypipe._nats._refusal.Refusal`: at connect, a permission, a live connection
    closed for its credentials); each is also an audit line naming ``principal`` (who this
    client signs in as). ``explain_refusal`` may say more about a refused sign-in than the
    server does (an expired JWT, a revoked key: whoever holds the credentials knows). A first
    connect the server refuses raises :class:`~xypipe._errors.NatsRefused` at once.
    ``max_reconnect_attempts=-1`` retries forever. ``bridge`` picks the Trio/asyncio bridge
    (``bench/bridge.py`` measures them; the default is the fastest). Raises
    :class:`NatsConnectionError` if no server can be reached within ``connect_deadline``
    (default: ``2 * connect_timeout`` per server). ``replicas``: copies every stream and KV
    bucket created on this connection keeps (:attr:`NatsClient.replicas`). nats-py itself
    would retry the *first* connect as long as ``max_reconnect_attempts`` allows, i.e. forever
    by default; the deadline makes a wrong URL fail fast while an established connection still
    reconnects forever.
    """
    server_list = [servers] if isinstance(servers, str) else list(servers)
    options: ConnectOptions = {
        "name": name,
        "connect_timeout": connect_timeout,
        "reconnect_time_wait": reconnect_wait,
        "max_reconnect_attempts": max_reconnect_attempts,
        "pending_size": reconnect_buffer_bytes,
        "allow_reconnect": True,
    }
    if user is not None:
        options["user"] = user
    if password is not None:
        options["password"] = password
    if token is not None:
        options["token"] = token
    if creds is not None:
        options["user_credentials"] = creds
    if nkeys_seed is not None:
        options["nkeys_seed"] = nkeys_seed
    if inbox_prefix != "_INBOX":
        options["inbox_prefix"] = inbox_prefix
    if tls is not None:
        options["tls"] = tls
    async with open_portal(bridge) as portal:
        core = Bridge(portal, publish_queue=publish_queue, close_timeout=close_timeout,
                      on_permission_denied=on_permission_denied, on_refusal=on_refusal,
                      explain_refusal=explain_refusal, principal=principal)
        what = f"connect to {', '.join(server_list)}"
        deadline = (
            connect_deadline
            if connect_deadline is not None
            else 2 * connect_timeout * len(server_list)
        )
        try:
            with trio.fail_after(deadline):
                await core.call(what, core.aio_connect, server_list, options)
        except trio.TooSlowError:
            # A refusal (-ERR 'Authorization Violation') is often followed by a reset of the
            # same attempt; name every distinct recent error, not just the last, so the cause
            # an operator must fix is never hidden behind the symptom.
            seen = list(dict.fromkeys(reversed(core.connect_errors)))
            last = "; earlier: ".join(seen) if seen else "no error reported"
            raise NatsConnectionError(
                f"{what}: no server reachable within {deadline:g} s (last error: {last})"
            ) from None
        except NatsRefused:
            assert core.connect_refusal is not None
            core.on_refusal(core.connect_refusal)
            raise
        except BridgeError as exc:
            raise NatsConnectionError(str(exc)) from exc.__cause__
        core.emit(BridgeEvent("connected", core.connected_url() or ""))
        try:
            yield NatsClient(core, inbox_prefix=inbox_prefix, replicas=replicas)
        finally:
            await core.close()
