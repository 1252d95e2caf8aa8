"""A token bucket fed the time (sans-I/O): ``burst`` at once, then ``rate`` a second."""

from __future__ import annotations


class TokenBucket:
    """Starts full; :meth:`take` spends one token if there is one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then spend a token; False when empty."""
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def refund(self) -> None:
        """Give back a token spent on something that turned out not to count."""
        self.tokens = min(self.burst, self.tokens + 1)
