"""What the NATS server refused, and why: one value for every refusal, read from its words.

A server refuses in two ways. At connect it answers ``-ERR 'Authorization Violation'`` (wrong
or missing credentials, an expired JWT, an unknown account, a revoked user — it does not say
which) or breaks off the TLS handshake; on a live connection it answers ``-ERR 'Permissions
Violation for Publish to "SUBJECT"'`` (or ``for Subscription to``) and keeps the connection,
or closes it with ``'User Authentication Expired'`` / ``'User Authentication Revoked'``.
:func:`server_refusal` and :func:`tls_refusal` turn those into a :class:`Refusal`; the bridge
audits and counts each one.

Two things nats-py hides are recovered here:

- **The subject's case.** nats-py lower-cases the server's ``-ERR`` text before anyone sees it
  (``$JS.API.CONSUMER.CREATE.XY_SRC`` would arrive as ``$js.api.consumer.create.xy_src``).
  :class:`ErrTap` reads the same bytes first, from nats-py's parser, and keeps each ``-ERR``
  line as sent, so a refusal names the subject exactly (``Refusal.exact``; when the tap could
  not be installed the lower-cased subject is reported and ``exact`` is false).
- **The server's answer at connect.** The server writes ``-ERR`` and closes at once; when the
  close arrives before nats-py reads its answer, nats-py sees only a reset or a broken pipe and
  the ``-ERR`` sits unread in its stream buffer. :func:`buffered_server_error` finds it there,
  so such an attempt is an authorization failure, not "no server reachable".
"""

from __future__ import annotations

import collections
import re
import ssl
from typing import Literal, TypeAlias

import attrs
from nats.aio.client import Client as _AioClient
from nats.protocol.parser import Parser

__all__ = [
    "ErrTap",
    "Op",
    "Reason",
    "Refusal",
    "buffered_server_error",
    "server_refusal",
    "tls_refusal",
]

#: Why: bad or missing credentials, a permission the user lacks, TLS, an expired JWT, a
#: revoked user (the label of ``nats_refusals_total``).
Reason: TypeAlias = Literal["auth", "permission", "tls", "expired", "revoked"]
#: What was refused: signing in, a publish, a subscription, a JetStream (or KV) API call.
Op: TypeAlias = Literal["connect", "publish", "subscribe", "jetstream"]

_PERMISSION = re.compile(r"permissions violation for (publish|subscription) to \"([^\"]*)\"",
                         re.IGNORECASE)
_ERR_LINE = re.compile(rb"-ERR\s+'([^'\r\n]*)'")
#: What nats-py raises for a refusal it read at connect: ``nats: 'Authorization Violation'``.
_QUOTED = re.compile(r"'([^']*)'")
_MAX_KEPT = 32


@attrs.frozen
class Refusal:
    """One refusal by the server: why, of what, on which subject, in the server's words."""

    reason: Reason
    op: Op
    #: The subject refused (publish, subscribe, JetStream); None for a connect.
    subject: str | None
    #: The server's own text (or the TLS library's, for a handshake the server broke off).
    detail: str
    #: Whether ``subject`` and ``detail`` are as the server sent them (false: nats-py's
    #: lower-cased copy, the tap not being installed).
    exact: bool = True


def _op_of(kind: str, subject: str) -> Op:
    if subject.upper().startswith(("$JS.", "$KV.")):
        return "jetstream"
    return "subscribe" if kind.lower() == "subscription" else "publish"


def server_refusal(text: str, tap: ErrTap | None = None) -> Refusal | None:
    """The refusal in a server's ``-ERR`` text (in any case, quoted or not), or None when the
    text is not a refusal. ``tap`` gives back the text as the server sent it."""
    seen = text.strip()
    quoted = _QUOTED.search(seen)
    if quoted is not None:
        seen = quoted.group(1)
    seen = seen.removeprefix("nats: ").strip(" '")
    original = tap.original(seen) if tap is not None else None
    exact = original is not None or seen != seen.lower()
    said = original or seen
    low = said.lower()
    permission = _PERMISSION.search(said)
    if permission is not None:
        kind, subject = permission.groups()
        return Refusal("permission", _op_of(kind, subject), subject, said, exact)
    if "authorization violation" in low:
        return Refusal("auth", "connect", None, said, exact)
    if "authentication expired" in low:
        return Refusal("expired", "connect", None, said, exact)
    if "authentication revoked" in low:
        return Refusal("revoked", "connect", None, said, exact)
    return None


def tls_refusal(exc: BaseException) -> Refusal | None:
    """A TLS handshake that failed: the server's certificate not trusted here, or the server
    refusing ours (its alert: ``unknown ca``, ``certificate required``). Other TLS errors — a
    connection torn down mid-record while it is being replaced — refuse nothing."""
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = exc.reason or ""
    if not (isinstance(exc, ssl.SSLCertVerificationError) or "ALERT" in reason):
        return None
    return Refusal("tls", "connect", None, f"{type(exc).__name__}: {reason} ({exc})")


def buffered_server_error(client: _AioClient) -> str | None:
    """An ``-ERR`` line the server sent that nats-py has not read: the stream buffer of the
    connection attempt that just failed (a reset or broken pipe hid it). nats-py internals,
    read defensively: None when they are not what this version of nats-py has."""
    transport = getattr(client, "_transport", None)
    reader = getattr(transport, "_io_reader", None)
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytes | bytearray):
        return None
    found = _ERR_LINE.search(bytes(buffer))
    return found.group(1).decode("utf-8", "replace") if found is not None else None


class ErrTap:
    """Keeps the server's ``-ERR`` texts as sent, for the lower-cased copies nats-py reports.

    :meth:`install` puts a parser that feeds it in front of nats-py's own on one client. Only
    the last few texts are kept; a look-up is by their lower-cased form.
    """

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._pending = b""
        self._tail = b""
        #: Whether the tap is in place (false: nats-py's parser is not the class it knows).
        self.installed = False

    def install(self, client: _AioClient) -> None:
        if type(getattr(client, "_ps", None)) is Parser:
            client._ps = _TappedParser(client, self)
            self.installed = True

    def original(self, lowered: str) -> str | None:
        return self._kept.get(lowered.lower())

    def feed(self, data: bytes) -> None:
        """Bytes nats-py is about to parse. Cheap unless they hold ``-ERR`` (an ``-ERR`` line
        cut between two reads is completed by the next one)."""
        if not self._pending and b"-ERR" not in data and b"-ERR" not in self._tail + data[:4]:
            self._tail = data[-4:]
            return
        text = self._pending + data if self._pending else self._tail + data
        self._pending = b""
        self._tail = data[-4:]
        start = 0
        while (i := text.find(b"-ERR", start)) != -1:
            end = text.find(b"\r\n", i)
            if end == -1:
                self._pending = text[i:i + 1024]
                return
            line = _ERR_LINE.match(text, i, end + 2)
            if line is not None:
                said = line.group(1).decode("utf-8", "replace")
                self._kept[said.lower()] = said
                while len(self._kept) > _MAX_KEPT:
                    self._kept.popitem(last=False)
            start = end + 2


class _TappedParser(Parser):
    """nats-py's parser, with the bytes shown to the tap first."""

    def __init__(self, client: _AioClient, tap: ErrTap) -> None:
        super().__init__(client)
        self._tap = tap

    async def parse(self, data: bytes = b"") -> None:
        self._tap.feed(data)
        await super().parse(data)
