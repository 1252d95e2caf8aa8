"""Authentication throttling per client address: the sans-I/O core.

Fed plain events with the time they happened (monotonic seconds), it keeps per address the recent
failures and answers whether an attempt may go ahead::

    throttle = AuthThrottle(ThrottlePolicy(max_failures=10, window_s=60, lockout_s=5))
    if not (v := throttle.check(addr, now)).allowed:
        refuse(retry_after=v.retry_after_s)        # fast: no signature is checked
    ...
    lock = throttle.failure(addr, now, "invalid")  # a Lockout when this failure locks it

Rules:

* ``max_failures`` failures from one address within ``window_s`` lock it for ``lockout_s``;
  each further lockout of the same address doubles that, up to ``max_lockout_s``. An address
  that has not been locked for ``forget_s`` starts over from the first step.
* A success clears the address's failures (not its lockout step).
* Memory is bounded: at most ``max_addresses`` are tracked; when a new one arrives at the limit,
  entries that no longer matter go first, then the least recently active one (counted as
  ``evicted``). An attacker with many addresses therefore costs a fixed amount of memory, and
  each of its addresses still gets at most ``max_failures`` tries per window.

Addresses are what the caller says they are; :func:`client_address` turns a socket peer into one
(an IPv6 client is throttled by its /64, which one host usually owns whole).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict, deque

import attrs

from xypipe._validate import Invalid, in_range

__all__ = ["AuthThrottle", "Lockout", "ThrottlePolicy", "ThrottleStatistics", "Verdict",
           "client_address"]


@attrs.frozen
class ThrottlePolicy:
    """Limits for authentication failures per client address (``[...auth_throttle]``)."""

    #: Failures within ``window_s`` that lock an address (0 disables throttling).
    max_failures: int = attrs.field(default=10, validator=in_range(0, 1_000_000))
    window_s: float = attrs.field(default=60.0, validator=in_range(0.001, 86_400.0))
    #: First lockout; each further one doubles, up to ``max_lockout_s``.
    lockout_s: float = attrs.field(default=5.0, validator=in_range(0.001, 86_400.0))
    max_lockout_s: float = attrs.field(default=300.0, validator=in_range(0.001, 86_400.0))
    #: An address not locked for this long starts again from ``lockout_s``.
    forget_s: float = attrs.field(default=900.0, validator=in_range(0.001, 604_800.0))
    #: Addresses tracked at most (memory bound).
    max_addresses: int = attrs.field(default=10_000, validator=in_range(1, 10_000_000))

    def __attrs_post_init__(self) -> None:
        if self.max_lockout_s < self.lockout_s:
            raise Invalid("max_lockout_s", f"expected at least lockout_s ({self.lockout_s:g})",
                          self.max_lockout_s)

    def lockout_for(self, strike: int) -> float:
        return min(self.max_lockout_s, self.lockout_s * 2.0 ** (strike - 1))


@attrs.frozen
class Verdict:
    allowed: bool
    #: Seconds until the address may try again (0 when allowed).
    retry_after_s: float = 0.0


@attrs.frozen
class Lockout:
    """An address was just locked: the one summary an audit line needs."""

    address: str
    failures: int
    window_s: float
    lockout_s: float
    #: 1 for the first lockout, 2 for the next (twice as long), ...
    strike: int
    #: Failure reasons within the window, most frequent first.
    reasons: tuple[tuple[str, int], ...]
    #: Attempts refused during the previous lockout of this address.
    refused_before: int


@attrs.frozen
class ThrottleStatistics:
    addresses: int
    locked: int
    max_addresses: int
    evicted: int


class _Entry:
    __slots__ = ("failures", "last_seen", "locked_from", "locked_until", "reasons", "refused",
                 "strike")

    def __init__(self, now: float) -> None:
        self.failures: deque[float] = deque()
        self.reasons: Counter[str] = Counter()
        self.locked_from = 0.0
        self.locked_until = 0.0
        self.strike = 0
        self.refused = 0
        self.last_seen = now


class AuthThrottle:
    """See the module docstring. One instance per gateway, shared by all its surfaces."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._evicted = 0

    def __len__(self) -> int:
        """Addresses tracked now (O(1), for a gauge)."""
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.policy.max_failures > 0

    def check(self, address: str, now: float) -> Verdict:
        """May ``address`` attempt to authenticate now? A refusal is counted for its summary."""
        e = self._entries.get(address)
        if e is None:
            return Verdict(True)
        self._touch(address, e, now)
        if now < e.locked_until:
            e.refused += 1
            return Verdict(False, e.locked_until - now)
        return Verdict(True)

    def failure(self, address: str, now: float, reason: str) -> Lockout | None:
        """A failed attempt; returns the :class:`Lockout` when this one locks the address."""
        if not self.enabled:
            return None
        p = self.policy
        e = self._entries.get(address)
        if e is None:
            e = self._admit(address, now)
        self._touch(address, e, now)
        if now < e.locked_until:
            return None  # raced past check(): already locked
        self._expire(e, now)
        e.failures.append(now)
        e.reasons[reason] += 1
        if len(e.failures) < p.max_failures:
            return None
        if e.strike and e.locked_until and now - e.locked_until > p.forget_s:
            e.strike = 0
        e.strike += 1
        duration = p.lockout_for(e.strike)
        lock = Lockout(address, len(e.failures), p.window_s, duration, e.strike,
                       tuple(e.reasons.most_common()), e.refused)
        e.locked_from = now
        e.locked_until = now + duration
        e.refused = 0
        e.failures.clear()
        e.reasons.clear()
        return lock

    def success(self, address: str, now: float) -> None:
        e = self._entries.get(address)
        if e is not None:
            e.failures.clear()
            e.reasons.clear()
            self._touch(address, e, now)

    def statistics(self, now: float) -> ThrottleStatistics:
        locked = sum(1 for e in self._entries.values() if now < e.locked_until)
        return ThrottleStatistics(len(self._entries), locked, self.policy.max_addresses,
                                  self._evicted)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _touch(self, address: str, e: _Entry, now: float) -> None:
        e.last_seen = max(e.last_seen, now)
        self._entries.move_to_end(address)

    def _expire(self, e: _Entry, now: float) -> None:
        horizon = now - self.policy.window_s
        while e.failures and e.failures[0] <= horizon:
            e.failures.popleft()
        if not e.failures:
            e.reasons.clear()

    def _stale(self, e: _Entry, now: float) -> bool:
        """Nothing left worth remembering: no lockout running or to be escalated, no failure
        in the window."""
        self._expire(e, now)
        return (not e.failures and now >= e.locked_until
                and (e.strike == 0 or now - e.locked_until > self.policy.forget_s))

    def _admit(self, address: str, now: float) -> _Entry:
        if len(self._entries) >= self.policy.max_addresses:
            # Least recently active first; stale entries are dropped for free, and if none is
            # stale the oldest goes anyway (bounded memory wins over one address's history).
            oldest, e = next(iter(self._entries.items()))
            if not self._stale(e, now):
                self._evicted += 1
            del self._entries[oldest]
            # Sweep a few more stale ones so the table does not sit at its limit.
            for _ in range(8):
                if not self._entries:
                    break
                addr, e = next(iter(self._entries.items()))
                if not self._stale(e, now):
                    break
                del self._entries[addr]
        e = _Entry(now)
        self._entries[address] = e
        return e


def client_address(peer: str) -> str:
    """The throttling key of a socket peer ``"host:port"``: the IP, or an IPv6 client's /64."""
    # The shell formats peers as f"{ip}:{port}" (IPv6 included), so the port is the last part.
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "(unknown)"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
