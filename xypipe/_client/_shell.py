"""The client's Trio shell: one trio-websocket connection at a time around the protocol core.

Every task lives in the nursery :func:`connect` opens: a supervisor that (re)connects with
backoff, and per connection trio-websocket's reader and a timer task (pings, overdue snapshots,
token refresh). The supervisor reads frames, feeds the core and hands its updates to the
program through a bounded channel: a program that stops reading stops the socket being read,
and the gateway sees a slow consumer (as it would a slow browser).

Errors cross this module as the client's own (:class:`~xypipe._errors.ClientError` and its
subclasses); trio-websocket's and the socket's never leak. The first connection must succeed
(``async with connect(...)`` raises otherwise); later losses are reconnected and the groups
resumed, unless the close says it cannot help (bad token, protocol version...), which ends
the iteration with that error.
"""

from __future__ import annotations

import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import cast

import attrs
import trio
import trio_websocket

from xypipe._errors import (
    GW_GOAWAY_RECEIVED,
    SDK_BAD_FRAME,
    SDK_CHECKSUM_MISMATCH,
    SDK_DELTA_NOT_APPLIED,
    SDK_GATEWAY_ERROR,
    SDK_HEARTBEAT_LOST,
    SDK_RECONNECTING,
    SDK_SNAPSHOT_REQUESTED,
    SDK_TOKEN_REFRESH_FAILED,
    ClientClosed,
    ClientError,
    GatewayClosed,
    GatewayUnreachable,
    HandshakeRejected,
    ReconnectGaveUp,
    TokenUnavailable,
    find_in_group,
    sole_leaf,
)
from xypipe._log import get_logger
from xypipe._md.seqrules import DEFAULT_MAX_GAP

from ._book import GroupBook
from ._core import DRAINING_CLOSE, Backoff, ClientCore, CoreOptions, close_error
from ._updates import (
    BadFrame,
    ClientStatistics,
    DeltaApplied,
    DeltaSkipped,
    Disconnected,
    ErrorReceived,
    SnapshotRequested,
    Update,
)

_log = get_logger("client")

#: A fixed token, or an async callable giving a fresh one (called for every connection and,
#: before the token expires, for a refresh).
TokenSource = str | Callable[[], Awaitable[str]]

#: HTTP statuses of a refused upgrade worth retrying (the gateway is full, or busy).
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


@attrs.frozen
class Reconnect:
    """How the client comes back after losing the gateway: equal-jitter exponential backoff
    (the first retry immediate), reset once a connection stayed up ``stable_s``."""

    enabled: bool = True
    base_s: float = 0.1
    cap_s: float = 2.0
    stable_s: float = 5.0
    #: Failed reconnection attempts before giving up (``None``: never; 0: do not reconnect),
    #: counted since the last connection that stayed up ``stable_s``.
    max_attempts: int | None = None


@attrs.frozen
class _Target:
    url: str
    host: str
    port: int
    resource: str
    host_header: str
    tls: bool


def _target(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ClientError(f"expected a ws:// or wss:// URL with a host, got {url!r}")
    tls = parts.scheme == "wss"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as exc:
        raise ClientError(f"{url!r}: {exc}") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if tls else 80
    return _Target(url, host, port, resource,
                   shown if port == default_port else f"{shown}:{port}", tls)


@attrs.frozen
class _Ended:
    """How one connection ended."""

    error: ClientError
    #: No reconnect can help (a refused token, a refused upgrade...).
    final: bool
    #: The gateway asked the client to move (a GoAway, or the draining close 4100): reconnect
    #: at once, without counting a failure.
    moved: bool = False


class _EofWatch(trio.abc.Stream):
    """The connection's stream, telling ``on_eof`` when the peer hangs up (or the socket
    breaks)."""

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
                 on_eof: Callable[[], None] | None) -> None:
        self.stream = stream
        self.on_eof = on_eof
        self.eof = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._ended()
            raise
        if not data:
            self._ended()
        return data

    def _ended(self) -> None:
        self.eof = True
        if self.on_eof is not None:
            self.on_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def _wall_us() -> int:
    return int(time.time() * 1e6)


class Client:
    """A connection to a gateway that survives reconnects; use :func:`connect`.

    Iterate it for :data:`~xypipe.client.Update` values; read a group's state with
    :meth:`book`. Every method is safe to call while the client reconnects (the request is
    kept and sent with the next connection).
    """

    def __init__(self, url: str, token: TokenSource, *, ssl_context: ssl.SSLContext | None,
                 origin: str | None, reconnect: Reconnect, options: CoreOptions, buffer: int,
                 connect_timeout_s: float, max_message_size: int) -> None:
        if buffer < 1:
            raise ClientError(f"buffer: expected at least 1 frame, got {buffer}")
        self._target = _target(url)
        if ssl_context is not None and not self._target.tls:
            raise ClientError(f"{url!r}: an ssl_context was given for a ws:// URL "
                              "(use wss:// for TLS)")
        self._ssl = ssl_context
        self._token = token
        self._headers = [(b"origin", origin.encode())] if origin else None
        self._reconnect = reconnect
        self._backoff = Backoff(base_s=reconnect.base_s, cap_s=reconnect.cap_s,
                                stable_s=reconnect.stable_s)
        self._connect_timeout = connect_timeout_s
        self._max_message_size = max_message_size
        self._core = ClientCore(options, where=f"gateway {url}")
        # One item per frame (its updates together): a channel hop per update would cost as
        # much as decoding the frame.
        self._send, self._receive = trio.open_memory_channel[Sequence[Update]](buffer)
        self._ready: deque[Update] = deque()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._send_lock = trio.Lock()
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        self._started = False
        self._stopping = False
        self._error: ClientError | None = None
        self._error_raised = False
        #: The last GoAway's retry hint (seconds).
        self._move_hint_s = 0.0

    # -- reading -----------------------------------------------------------------------------

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Update:
        while not self._ready:
            try:
                self._ready.extend(await self._receive.receive())
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
        if self._ready:
            return self._ready.popleft()
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error
        raise StopAsyncIteration

    def book(self, group: str) -> GroupBook | None:
        """The client's state of ``group`` (None before its first data)."""
        return self._core.book(group)

    @property
    def books(self) -> Mapping[str, GroupBook]:
        return self._core.books

    def statistics(self) -> ClientStatistics:
        return self._core.statistics()

    @property
    def connected(self) -> bool:
        return self._core.is_open

    @property
    def session_id(self) -> str:
        return self._core.session_id

    @property
    def principal(self) -> str:
        return self._core.principal

    @property
    def error(self) -> ClientError | None:
        """What ended the client, if something did."""
        return self._error

    # -- asking ------------------------------------------------------------------------------

    async def subscribe(self, *groups: str, shards: Iterable[int] = ()) -> None:
        """Subscribe to ``groups`` (every shard, or only ``shards``): each gets a snapshot,
        then its deltas. A group's projection is subscribed as ``"group/projection"`` (its own
        stream: only its members, no shards). The gateway answers with :class:`Subscribed`, or an
        :class:`ErrorReceived` per refused group (``ACL_DENIED``, ``UNKNOWN_GROUP``)."""
        self._check_alive()
        self._core.subscribe(groups, shards)
        await self._flush()

    async def unsubscribe(self, *groups: str) -> None:
        self._check_alive()
        self._core.unsubscribe(groups)
        await self._flush()

    async def request_snapshot(self, group: str) -> bool:
        """Have ``group`` resent from a snapshot (as the client does itself on a gap); False
        when a request for it went out less than ``snapshot_timeout_s`` ago (or the group is
        not subscribed). Called from the loop reading the updates, so it yields none itself."""
        self._check_alive()
        asked = self._core.request_snapshot(group, trio.current_time(), "requested")
        await self._flush()
        return asked is not None

    async def aclose(self) -> None:
        """Close politely (code 1000) and end the iteration."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                await ws.aclose(1000, "client leaving")
        self._scope.cancel()

    def _check_alive(self) -> None:
        if self._error is not None:
            self._error_raised = True
            raise self._error
        if self._stopping or self._scope.cancel_called:
            raise ClientClosed("the client is closed (used outside its `async with`?)")

    async def _flush(self) -> None:
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            for frame in self._core.take_outgoing():
                try:
                    await ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    return  # the reader sees the close and reconnects

    async def _push(self, *updates: Update) -> None:
        if not updates:
            return
        for u in updates:
            _log_update(u)
        try:
            await self._send.send(updates)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # nobody iterates any more: the client is ending

    # -- connections -------------------------------------------------------------------------

    async def _supervise(self, task_status: trio.TaskStatus[ClientError | None]) -> None:
        try:
            with self._scope:
                while True:
                    ended = await self._connection(task_status)
                    if self._stopping:
                        return
                    if not self._started:
                        task_status.started(ended.error)
                        return
                    if ended.final or not self._reconnect.enabled:
                        self._error = ended.error
                        return
                    if ended.moved:
                        # Planned: the gateway spreads its clients' moves itself.
                        _log.info("gateway draining; reconnecting at once",
                                  code=GW_GOAWAY_RECEIVED, url=self._target.url,
                                  reason=str(ended.error))
                        await self._push(Disconnected(DRAINING_CLOSE, str(ended.error), 0.0))
                        self._backoff.moved(self._move_hint_s)
                        continue
                    delay = self._backoff.failed(trio.current_time())
                    limit = self._reconnect.max_attempts
                    # The first failure is the loss itself; the others are attempts.
                    if limit is not None and self._backoff.failures > limit:
                        self._error = ReconnectGaveUp(self._backoff.failures - 1, ended.error)
                        return
                    err = ended.error
                    code = err.close_code if isinstance(err, GatewayClosed) else None
                    _log.warning("gateway connection lost; reconnecting", code=SDK_RECONNECTING,
                                 url=self._target.url, error=str(err), error_code=err.code,
                                 retry_in_s=round(delay, 3))
                    await self._push(Disconnected(code, str(err), delay))
                    await trio.sleep(delay)
        finally:
            self._send.close()

    async def _connection(self, task_status: trio.TaskStatus[ClientError | None]) -> _Ended:
        try:
            token = await self._fresh_token()
        except TokenUnavailable as exc:
            return _Ended(exc, final=False)
        url = self._target.url
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await self._open_stream()
        except trio.TooSlowError:
            return _Ended(GatewayUnreachable(url, f"no connection within "
                                                  f"{self._connect_timeout:g} s"), final=False)
        except (OSError, trio.BrokenResourceError) as exc:
            # trio wraps a TLS failure (a certificate not trusted...) in BrokenResourceError.
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            return _Ended(GatewayUnreachable(url, f"cannot connect: {cause}"), final=False)
        try:
            async with trio.open_nursery() as nursery:
                ended = await self._serve(nursery, stream, token, task_status)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio-websocket's reader task raises a refused upgrade (the HTTP status and body
            # come after the handshake began); anything else is unexpected: one error out.
            rejected = find_in_group(group, trio_websocket.ConnectionRejected)
            if rejected is None:
                raise sole_leaf(group) from None
            return self._rejected(rejected)
        finally:
            self._ws = None
            self._core.closed()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
        return ended

    async def _open_stream(self) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        t = self._target
        if not t.tls:
            return await trio.open_tcp_stream(t.host, t.port)
        context = self._ssl if self._ssl is not None else ssl.create_default_context()
        stream = await trio.open_ssl_over_tcp_stream(t.host, t.port, ssl_context=context,
                                                     https_compatible=True)
        try:
            await stream.do_handshake()  # certificate errors here, not in the first read
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _fresh_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        try:
            token = await self._token()
        except Exception as exc:  # the program's callable: any failure is reported as ours
            raise TokenUnavailable(f"the token callable raised {type(exc).__name__}: "
                                   f"{exc}") from exc
        if not isinstance(token, str) or not token:
            raise TokenUnavailable(f"the token callable returned {token!r}; expected a JWT")
        return token

    async def _serve(self, nursery: trio.Nursery,
                     stream: trio.SocketStream | trio.SSLStream[trio.SocketStream], token: str,
                     task_status: trio.TaskStatus[ClientError | None]) -> _Ended:
        t = self._target
        welcome_by = trio.current_time() + self._connect_timeout
        ws: trio_websocket.WebSocketConnection | None = None
        with trio.CancelScope(deadline=welcome_by) as handshake:
            # trio-websocket waits for the upgrade's answer forever if the peer hangs up
            # first (a proxy without a backend, a gateway going away): end the wait at EOF.
            # (Its signature names socket streams; it only uses the Stream interface.)
            watched = _EofWatch(stream, handshake.cancel)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, cast(trio.SocketStream, watched), t.host_header, t.resource,
                    extra_headers=self._headers, max_message_size=self._max_message_size)
            except trio_websocket.ConnectionRejected as exc:
                return self._rejected(exc)
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError,
                    trio.BrokenResourceError) as exc:
                return _Ended(GatewayUnreachable(t.url, f"WebSocket handshake failed: "
                                                        f"{type(exc).__name__} {exc}"),
                              final=False)
        watched.on_eof = None
        if ws is None:
            why = ("the connection was closed during the WebSocket handshake" if watched.eof
                   else f"no WebSocket handshake within {self._connect_timeout:g} s")
            return _Ended(GatewayUnreachable(t.url, why), final=False)
        self._ws = ws
        try:
            await ws.send_message(self._core.open(token))
        except trio_websocket.ConnectionClosed as exc:
            return self._closed(exc.reason)
        nursery.start_soon(self._timers)
        return await self._read(ws, welcome_by, task_status)

    async def _read(self, ws: trio_websocket.WebSocketConnection, welcome_by: float,
                    task_status: trio.TaskStatus[ClientError | None]) -> _Ended:
        core = self._core
        while True:
            # A quiet market still gets a frame per heartbeat; silence means a dead peer.
            wait_until = (trio.current_time() + core.read_timeout() if core.is_open
                          else welcome_by)
            try:
                with trio.move_on_at(wait_until):
                    data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return self._closed(exc.reason)
            else:
                if trio.current_time() >= wait_until:
                    return self._silent(core.is_open)
            now = trio.current_time()
            was_open = core.is_open
            if isinstance(data, str):
                updates = core.text_frame(data)
            else:
                updates = core.receive(data, now, _wall_us())
            await self._flush()
            if not was_open and core.is_open:
                self._backoff.opened(now)
                self._wake.set()  # the timers now have a heartbeat to keep
                if not self._started:
                    self._started = True
                    task_status.started(None)
            await self._push(*updates)
            if core.go_away is not None:
                self._move_hint_s = core.go_away.retry_ms / 1000
                return await self._move(ws, core.go_away.reason)

    async def _move(self, ws: trio_websocket.WebSocketConnection, reason: str) -> _Ended:
        # Leave politely (the gateway counts who left by themselves); the reconnection goes to
        # this client's own URL — a GoAway names no other.
        with trio.move_on_after(1.0):
            await ws.aclose(1000, "moving (GoAway)")
        return _Ended(GatewayClosed(f"{self._target.url}: the gateway asked to move "
                                    f"({reason or 'draining'})", close_code=None),
                      final=False, moved=True)

    def _rejected(self, exc: trio_websocket.ConnectionRejected) -> _Ended:
        body = (exc.body or b"").decode("utf-8", "replace").strip()[:200]
        return _Ended(HandshakeRejected(self._target.url, exc.status_code, body),
                      final=exc.status_code not in _RETRY_STATUSES)

    def _silent(self, was_open: bool) -> _Ended:
        url = self._target.url
        if not was_open:
            return _Ended(GatewayUnreachable(url, f"no Welcome within "
                                                  f"{self._connect_timeout:g} s of the hello"),
                          final=False)
        timeout = self._core.read_timeout()
        _log.warning("nothing received from the gateway; the connection is dead",
                     code=SDK_HEARTBEAT_LOST, url=url, silent_s=timeout)
        return _Ended(GatewayClosed(f"{url}: nothing received for {timeout:g} s "
                                    f"({self._core.options.dead_after_beats} heartbeats): "
                                    "the connection is dead", close_code=None), final=False)

    def _closed(self, reason: trio_websocket.CloseReason | None) -> _Ended:
        code = None if reason is None else reason.code
        text = "" if reason is None else (reason.reason or "")
        error, final = close_error(code, text, self._core.fatal_error, self._target.url)
        return _Ended(error, final=final, moved=code == DRAINING_CLOSE)

    async def _timers(self) -> None:
        core = self._core
        while True:
            with trio.move_on_at(core.next_deadline()):
                await self._wake.wait()
            self._wake = trio.Event()
            due = core.tick(trio.current_time(), _wall_us())
            if due.refresh:
                await self._refresh()
            await self._flush()
            await self._push(*due.updates)

    async def _refresh(self) -> None:
        try:
            with trio.fail_after(self._connect_timeout):
                token = await self._fresh_token()
        except (TokenUnavailable, trio.TooSlowError) as exc:
            _log.warning("token refresh failed; the current token stays until it expires",
                         code=SDK_TOKEN_REFRESH_FAILED, url=self._target.url, error=str(exc))
            self._core.refresh_failed(trio.current_time())
            return
        self._core.refresh(token)


def _log_update(u: Update) -> None:
    if isinstance(u, DeltaApplied) and u.checksum_mismatches:
        _log.warning("checksum mismatch; resynchronising the group", code=SDK_CHECKSUM_MISMATCH,
                     group=u.group, shard=u.shard, seq=u.seq, mismatches=u.checksum_mismatches)
    elif isinstance(u, DeltaSkipped) and u.verdict not in ("duplicate", "held"):
        _log.warning("delta not applied", code=SDK_DELTA_NOT_APPLIED, group=u.group,
                     shard=u.shard, epoch=u.epoch, seq=u.seq, verdict=u.verdict)
    elif isinstance(u, SnapshotRequested):
        _log.info("snapshot requested", code=SDK_SNAPSHOT_REQUESTED, group=u.group,
                  reason=u.reason)
    elif isinstance(u, ErrorReceived) and not u.fatal:
        _log.warning("gateway error", code=SDK_GATEWAY_ERROR, error=u.name, group=u.group,
                     message=u.message)
    elif isinstance(u, BadFrame):
        _log.warning("bad frame from the gateway", code=SDK_BAD_FRAME, reason=u.reason)


@asynccontextmanager
async def connect(
    url: str, *, token: TokenSource, ssl_context: ssl.SSLContext | None = None,
    origin: str | None = None, reconnect: Reconnect | bool = True, verify: bool = True,
    lean: bool = False, client_name: str = "xypipe.client/0.1", buffer: int = 256,
    connect_timeout_s: float = 10.0, snapshot_timeout_s: float = 2.0,
    dead_after_beats: int = 3, max_gap: int = DEFAULT_MAX_GAP,
    max_message_size: int = 16 << 20,
) -> AsyncIterator[Client]:
    """Connect to a gateway's WebSocket and say hello with ``token``; yields the open
    :class:`Client` (its background tasks live until the block ends). Raises the first
    connection's error (:class:`GatewayUnreachable`, :class:`HandshakeRejected`,
    :class:`GatewayAuthError`...) instead of yielding. See ``docs/client.md``."""
    policy = reconnect if isinstance(reconnect, Reconnect) else Reconnect(enabled=reconnect)
    options = CoreOptions(client=client_name, verify=verify, lean=lean, max_gap=max_gap,
                          snapshot_timeout_s=snapshot_timeout_s,
                          dead_after_beats=dead_after_beats)
    client = Client(url, token, ssl_context=ssl_context, origin=origin, reconnect=policy,
                    options=options, buffer=buffer, connect_timeout_s=connect_timeout_s,
                    max_message_size=max_message_size)
    failure: ClientError | None = None
    try:
        async with trio.open_nursery() as nursery:
            failure = await nursery.start(client._supervise)
            if failure is None:
                try:
                    yield client
                except BaseException:
                    client._scope.cancel()
                    raise
                await client.aclose()
    except BaseExceptionGroup as group:
        # The program's own error from the block (or ours), not wrapped in a group.
        raise sole_leaf(group) from None
    if failure is not None:
        raise failure
    if client._error is not None and not client._error_raised:
        client._error_raised = True
        raise client._error

