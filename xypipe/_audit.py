"""Audit lines: one shape for every decision about who may do what (the gateway's access
decisions, the NATS server's refusals of this process).

Every audit line is a JSON log line on the ``xypipe.audit`` logger with ``audit: true`` and
three fields that are always there:

* ``sub`` — the principal (the verified token's subject); :data:`ANONYMOUS` before any token was
  verified, with ``claimed_sub`` — the subject an *unverified* token claimed — when there was one;
* ``action`` — what was attempted (``auth``, ``refresh``, ``subscribe``, ``resume``,
  ``connect``, ``admin``, ``admin.read``, ``admin.flag``, ``admin.flag.applied``,
  ``auth.throttle``, ``session``);
* ``outcome`` — what came of it (``allowed``, ``denied``, ``expired``, ``locked``, ``invalid``,
  ``conflict``, ``failed``, ``applied``, ``reverted``, ``revert_failed``).

A refusal carries its error ``code`` (a warning or error line); an allowed action is an info
line. Secrets never reach an audit line: the log redacts tokens, keys and seeds by their shape
(:mod:`xypipe._redact`), and never masks ``sub``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import jwt

from xypipe._log import Logger

__all__ = ["ANONYMOUS", "AuditLog", "claimed_subject"]

#: ``sub`` of an audit line about a client that has not (yet) presented a valid token.
ANONYMOUS = "(anonymous)"

# A claimed subject is attacker-controlled: bounded before it is logged.
_CLAIM_MAX = 200


def claimed_subject(token: str) -> str | None:
    """The ``sub`` an unverified token claims (for the audit of a refused token), or None."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub[:_CLAIM_MAX] if isinstance(sub, str) and sub else None


class AuditLog:
    """Writes audit lines in the one shape above."""

    def __init__(self, logger: Logger) -> None:
        self._log = logger

    def record(
        self,
        msg: str,
        *,
        action: str,
        outcome: str,
        sub: str | None,
        code: str | None = None,
        severity: Literal["warning", "error"] = "warning",
        details: Mapping[str, object] | None = None,
        **fields: object,
    ) -> None:
        """One audit line; with ``code`` it is a warning (or ``severity="error"``).
        ``details`` are fields known only at run time (a session's audit effect)."""
        doc = {"audit": True, "action": action, "outcome": outcome,
               "sub": sub if sub else ANONYMOUS, **(details or {}), **fields}
        if code is None:
            self._log.info(msg, **doc)
        elif severity == "error":
            self._log.error(msg, code=code, exc=None, **doc)
        else:
            self._log.warning(msg, code=code, **doc)
