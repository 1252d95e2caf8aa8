"""A JetStream feed paced by acknowledgements, delivered in the bridge's batches.

The bridge's pull ``fetch`` hands messages over one asyncio wake-up per message (nats-py reads
a fetch reply message by message), which caps a replay near 8k msgs/s. This feed is a push
consumer instead, with ``ack_policy = all`` and ``max_ack_pending``: the server delivers to our
inbox (which the bridge batches like any subscription) and stops once ``max_pending`` messages
are unacknowledged. The caller acknowledges a batch after handing it downstream, so the pace is
still set by the downstream budget — backpressure reaches the server.

Consumers are created, looked up and deleted through the bridge's JetStream module
(:meth:`~xypipe._nats.JetStream.create_push_consumer`, ``consumer_state``, ``delete_consumer``);
the feed names them itself (``xyfeed_<hex>``), so one whose creation was never confirmed can be
found and deleted.

The consumer is ephemeral (memory, R1) and lives on the server, so it can vanish: a server
restart (SIGKILL included), lame-duck mode, a cluster node loss, the inactivity reaper, an
operator. The feed notices (idle heartbeats, the bridge's ``reconnected``/``lame_duck`` events,
consumer info, heartbeats that report deliveries we never received) and re-creates it from the
last stream sequence handed downstream + 1, so the caller sees no hole and no repeat.

Every consumer pushes into a deliver subject of its own (a fresh inbox, the previous one
unsubscribed first), as the NATS clients' ordered consumers do: whatever the consumer re-created
away still sends — it may live on when its deletion cannot be confirmed, e.g. on a cluster node
that just died — reaches nobody, and its idle heartbeats cannot pass for the new one's. So the
deletion is waited for only briefly (``DELETE_WAIT_S``): the server reaps a consumer without
interest after ``inactive_threshold`` anyway. Waiting for it instead stalled the feed for the
JetStream API's whole timeout at each retry. The decisions are :class:`~xypipe._stages._jswatch.
ConsumerWatch`'s (sans-I/O); this module is its Trio shell. Why not a durable file consumer:
``docs/architecture.md``, "JetStream choices".

Status messages (idle heartbeats: header-only, ``Status: 100``, no reply subject) arrive on the
same inbox as deliveries — the bridge hands every message over as it is — and are consumed
here, never returned as data.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import trio

from xypipe._errors import JS_CONSUMER_RECREATED, BridgeError
from xypipe._log import Logger, get_logger
from xypipe._retry import DEFAULT_BACKOFF, Backoff, retrying, transient
from xypipe._stages._jswatch import HEARTBEAT, MISSING, Check, ConsumerWatch
from xypipe._trio_util import single_error_unwrapped
from xypipe.abc import (
    BridgeEvent,
    ConsumerState,
    Deliver,
    JetStream,
    Msg,
    NatsClient,
    PushConsumerConfig,
    Subscription,
)

_log = get_logger("jsfeed")


def stream_seq_of(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject (``$JS.ACK...``, v1 with 9
    tokens or v2 with 12)."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[5])
    if n >= 11:
        return int(tokens[7])
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


def pending_of(reply: str) -> int:
    """Messages still waiting in the stream for this consumer after this one (the last token
    of the reply subject before v2's random token): the consumer's lag, for free."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[8])
    if n >= 11:
        return int(tokens[10])
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


def delivery_of(reply: str) -> tuple[int, int]:
    """``(stream sequence, stored time in microseconds since the epoch)`` of a JetStream
    delivery, from its reply subject: the time is the server's own stamp of when the message
    entered the stream, the same on every replay."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[5]), int(tokens[7]) // 1000
    if n >= 11:
        return int(tokens[7]), int(tokens[9]) // 1000
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


#: How long a re-creation waits for the old consumer's deletion before going on without it
#: (see the module docstring).
DELETE_WAIT_S = 1.0


def _status(m: Msg) -> str | None:
    """A status message's code (``"100"`` heartbeat / flow control, ``"409"`` ...), else None."""
    h = m.headers
    if h and not m.data:
        code = h.get("Status")
        return str(code) if code else None
    return None


class JsFeed:
    """Batches of deliveries (``list[Msg]``, never empty, never a status message); call
    :meth:`ack` with each batch once it is handed downstream."""

    def __init__(self, nc: NatsClient, stream: str, config: PushConsumerConfig, what: str,
                 watch: ConsumerWatch, *, gap_check: bool,
                 on_recreate: Callable[[str], None] | None, log: Logger,
                 max_batch: int, inbox_pending: int) -> None:
        self._nc = nc
        self.js: JetStream = nc.jetstream()
        #: The subscription to the current consumer's deliver subject, and what closes it.
        self._sub: Subscription | None = None
        self._inbox: AsyncExitStack | None = None
        self._max_batch = max_batch
        self._inbox_pending = inbox_pending
        self.stream = stream
        self._config = config
        self._what = what
        self.watch = watch
        self._gap_check = gap_check
        self._on_recreate = on_recreate
        self._log = log
        self.name = ""
        #: Re-creations so far (also counted by ``on_recreate``).
        self.recreated = 0
        self._scope: trio.CancelScope | None = None
        #: The check in flight, cancelled by a reconnect: a request sent to a server going
        #: away (lame duck) would otherwise hold the feed for its whole timeout.
        self._check_scope: trio.CancelScope | None = None
        #: Consumers asked for whose creation was not confirmed (a timeout, a cancellation).
        self._unconfirmed: set[str] = set()
        #: Old consumers whose deletion was not confirmed within ``DELETE_WAIT_S``.
        self.left_behind = 0
        self._ack_reply = ""
        self.pending_at_start = 0

    # -- consumer management ------------------------------------------------------------------
    async def _open_inbox(self) -> None:
        """A fresh deliver subject for the next consumer, the previous one unsubscribed first
        (what it still holds is beyond what the caller has: the next consumer delivers it)."""
        await self.close_inbox()
        # Below the client's own inbox prefix: on the embedded bus only its role may read there.
        subject = f"{self._nc.inbox_prefix}.xyfeed.{secrets.token_hex(8)}"
        stack = AsyncExitStack()
        self._sub = await stack.enter_async_context(self._nc.subscribe(
            subject, max_batch=self._max_batch, max_pending=self._inbox_pending))
        self._inbox = stack
        self._config = attrs.evolve(self._config, deliver_subject=subject)

    async def close_inbox(self) -> None:
        stack, self._inbox, self._sub = self._inbox, None, None
        if stack is not None:
            await stack.aclose()

    async def _create(self, deliver: Deliver) -> ConsumerState:
        await self._open_inbox()
        # Named by us, so that one whose answer never came can be found and deleted.
        name = f"xyfeed_{secrets.token_hex(8)}"
        self._unconfirmed.add(name)
        state = await self.js.create_push_consumer(self.stream, name, self._config,
                                                    deliver=deliver)
        self._unconfirmed.discard(name)
        self.name = state.name
        return state

    async def start(self, deliver: Deliver) -> None:
        state = await self._create(deliver)
        #: What the consumer had to deliver when it was created (a one-shot read such as
        #: the last message per subject knows from it how many to wait for).
        self.pending_at_start = state.num_pending
        self.watch.started(trio.current_time(), state.delivered_seq)

    async def _exists(self) -> bool:
        return await self.js.consumer_state(self.stream, self.name) is not None

    async def _delete(self, name: str) -> None:
        """Delete ``name`` (already gone is fine); only a transient failure raises."""
        try:
            await self.js.delete_consumer(self.stream, name)
        except BridgeError as exc:
            if transient(exc):
                raise
            # e.g. "consumer not found" reported as another code by an older server: the goal
            # (no consumer of that name) holds.
            self._log.info("consumer not deleted", consumer=name, reason=str(exc))

    async def _delete_briefly(self, name: str) -> None:
        """Delete ``name``, waiting ``DELETE_WAIT_S`` at most: one that cannot be deleted now
        pushes into an inbox nobody reads any more, and the server reaps it."""
        with trio.move_on_after(DELETE_WAIT_S):
            try:
                await self._delete(name)
            except BridgeError as exc:
                self._log.info("consumer not deleted; left to the server's inactivity reaper",
                               consumer=name, reason=str(exc))
            else:
                return
        self.left_behind += 1

    async def _recreate(self, reason: str) -> None:
        old = self.name
        if old:
            await self._delete_briefly(old)
        # A creation abandoned half-way (a reconnect cancels a request to a server going away)
        # may have happened on the server: it has a name of ours, so it goes too.
        for name in list(self._unconfirmed):
            await self._delete_briefly(name)
            self._unconfirmed.discard(name)
        resume = self.watch.resume_seq
        await self._create(("seq", resume))
        self.recreated += 1
        self.watch.recreated(trio.current_time())
        if self._on_recreate is not None:
            self._on_recreate(reason)
        self._log.warning("JetStream consumer re-created", code=JS_CONSUMER_RECREATED,
                          stream=self.stream, consumer=self.name, old_consumer=old,
                          reason=reason, resume_seq=resume)

    async def _check(self, check: Check) -> None:
        watch = self.watch
        try:
            if not check.recreate:
                if await self._exists():
                    watch.confirmed(trio.current_time(), check)
                    return
                check = Check(MISSING if check.reason == HEARTBEAT else check.reason, True)
            await self._recreate(check.reason)
        except BridgeError as exc:
            if not transient(exc) or self._nc.closed:
                raise
            delay = watch.failed(trio.current_time(), check)
            self._log.warning(f"checking {self._what} failed; retrying", code=exc.code,
                              reason=check.reason, retry_in_ms=round(delay * 1000),
                              error=str(exc))

    async def follow_events(self, events: trio.MemoryReceiveChannel[BridgeEvent]) -> None:
        """Reconnects and lame-duck notices from the bridge; wakes a waiting ``__anext__``."""
        async for ev in events:
            if ev.kind == "reconnected":
                self.watch.reconnected()
                if self._check_scope is not None:
                    self._check_scope.cancel()
            elif ev.kind == "lame_duck":
                self.watch.lame_duck()
            else:
                continue
            if self._scope is not None:
                self._scope.cancel()

    # -- deliveries ---------------------------------------------------------------------------
    def __aiter__(self) -> JsFeed:
        return self

    async def __anext__(self) -> list[Msg]:
        watch = self.watch
        while True:
            now = trio.current_time()
            check = watch.due(now)
            if check is not None:
                # Cancelled by a reconnect: the check it raised (re-create) is due at once.
                with trio.CancelScope() as self._check_scope:
                    await self._check(check)
                self._check_scope = None
                continue
            watch.waiting(now)
            sub = self._sub
            if sub is None:  # a re-creation failed half-way: the next check retries it
                raise BridgeError(f"{self._what}: no consumer to read from")
            with trio.CancelScope(deadline=watch.deadline()) as scope:
                self._scope = scope
                try:
                    raw = await sub.receive()
                except trio.EndOfChannel:
                    raise StopAsyncIteration from None
                finally:
                    self._scope = None
            if scope.cancelled_caught:
                continue
            batch = self._accept(raw, trio.current_time())
            if batch:
                watch.got_batch()
                return batch

    def _accept(self, raw: list[Msg], now: float) -> list[Msg]:
        watch = self.watch
        data = [m for m in raw if m.reply]
        if len(data) == len(raw):
            # The hot path: only deliveries, all new.
            watch.heard(now)
            last = data[-1].reply
            watch.last_received = stream_seq_of(last)
            self._ack_reply = last
            return data
        out: list[Msg] = []
        last_reply = ""
        for m in raw:
            code = _status(m)
            if code is None and m.reply:
                last_reply = m.reply
                seq = stream_seq_of(m.reply)
                if watch.accept(seq):
                    out.append(m)
                continue
            self._on_status(m, code, now)
        if data:
            watch.heard(now)
        if last_reply:
            self._ack_reply = last_reply
            if not out:
                # All seen already: ack so the consumer moves on past them.
                self._nc.publish_nowait(last_reply, b"+ACK")
        return out

    def _on_status(self, m: Msg, code: str | None, now: float) -> None:
        h = m.headers or {}
        desc = str(h.get("Description", ""))
        if code == "100" and m.reply:
            # Flow control (not enabled on our consumers, answered in case a server sends it).
            self._nc.publish_nowait(m.reply, b"")
            self.watch.heard(now)
        elif code == "100":
            last = h.get("Nats-Last-Stream")
            self.watch.heartbeat(now, int(last) if self._gap_check and last else None)
        elif code == "409" and "deleted" in desc.lower():
            self.watch.heard(now)
            self.watch.deleted()
        else:
            self._log.info("status message on the feed ignored", status=code, description=desc,
                           subject=m.subject)

    def ack(self, batch: list[Msg]) -> None:
        """Acknowledge everything up to the batch's last delivery (ack-all): the caller has
        handed it downstream, so a re-created consumer starts after it."""
        if batch and self._ack_reply:
            self.watch.handed(stream_seq_of(batch[-1].reply))
            self._nc.publish_nowait(self._ack_reply, b"+ACK")


@asynccontextmanager
async def js_feed(nc: NatsClient, stream: str, *, deliver: Deliver, filter_subject: str = ">",
                  max_pending: int = 4096, max_batch: int = 1024,
                  heartbeat_s: float = 0.5, missed_heartbeats: int = 3,
                  backoff: Backoff = DEFAULT_BACKOFF,
                  on_recreate: Callable[[str], None] | None = None,
                  on_retry: Callable[[BridgeError], None] | None = None,
                  log: Logger | None = None) -> AsyncIterator[JsFeed]:
    """Deliveries of ``stream`` from ``deliver`` on, at most ``max_pending`` unacknowledged;
    the consumer is re-created whenever it goes missing (``on_recreate(reason)`` counts it)."""
    logger = log if log is not None else _log
    config = PushConsumerConfig(
        deliver_subject="",  # each consumer its own (JsFeed._open_inbox)
        filter_subject=filter_subject,
        ack="all",
        max_ack_pending=max_pending,
        # The server says "still here, nothing for you" this often when idle.
        idle_heartbeat_s=heartbeat_s,
        inactive_threshold_s=30.0,
        # The deliveries sit in the bridge's bounded inbox until acked; no redelivery races.
        ack_wait_s=3600.0,
        max_deliver=1,
        memory=True,
        replicas=1,
    )
    what = f"push consumer on {stream!r} ({filter_subject})"
    watch = ConsumerWatch(heartbeat_s, missed_heartbeats, trio.current_time(), backoff)
    # Events from now on: a reconnect during the creation below still counts.
    events = nc.events()
    # Gap detection reads the heartbeat's last *stream* sequence, which is only comparable
    # with our deliveries when the consumer sees every subject.
    feed = JsFeed(nc, stream, config, what, watch, gap_check=filter_subject == ">",
                  on_recreate=on_recreate, log=logger, max_batch=max_batch,
                  inbox_pending=max_pending * 2)
    with single_error_unwrapped():
        try:
            async with trio.open_nursery() as nursery:
                await retrying(f"create {what}", lambda: feed.start(deliver),
                               backoff=backoff, log=logger, on_failure=on_retry,
                               gave_up=lambda: bool(nc.closed))
                nursery.start_soon(feed.follow_events, events)
                try:
                    yield feed
                finally:
                    nursery.cancel_scope.cancel()
                    events.close()
                    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                        try:
                            await feed.js.delete_consumer(stream, feed.name)
                        except BridgeError as exc:
                            # Gone already, or the connection is closing: the server removes
                            # it after inactive_threshold anyway.
                            logger.info("consumer not deleted", consumer=feed.name,
                                        reason=str(exc))
        finally:
            with trio.CancelScope(shield=True):
                await feed.close_inbox()
