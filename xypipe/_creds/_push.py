"""Pushing account JWTs to a running server's ``full`` resolver (``xypipe creds push``).

The server accepts an account JWT signed by its operator on ``$SYS.REQ.CLAIMS.UPDATE`` from a
user of the system account, stores it in its resolver directory and applies it at once: a
revoked user is disconnected, new limits hold. The push signs in as a system-account user
minted for the occasion (valid one minute, its ``.creds`` file removed afterwards), over mTLS
with the chain's ``SYS`` client certificate.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from xypipe._creds._chain import SYSTEM, Chain
from xypipe._creds._pki import client_tls_context
from xypipe._errors import CREDS_ACCOUNTS_PUSHED, CREDS_PUSH_REFUSED, CredsError
from xypipe._log import get_logger
from xypipe._nats import connect

__all__ = ["PushResult", "push_accounts"]

_log = get_logger("creds")

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
_PUSH_TTL_S = 60.0


@attrs.frozen
class PushResult:
    """The server's answer for one account JWT."""

    account: str
    ok: bool
    message: str


def _answer(account: str, data: bytes) -> PushResult:
    try:
        doc = json.loads(data)
    except ValueError:
        return PushResult(account, False, f"unreadable answer: {data[:200]!r}")
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return PushResult(account, False, str(doc["error"].get("description", doc["error"])))
    body = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(body, dict) and body.get("code") == 200:
        return PushResult(account, True, str(body.get("message", "updated")))
    return PushResult(account, False, f"unexpected answer: {doc!r}")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def push_accounts(chain: Chain, url: str, *, now: float,
                        timeout_s: float = 5.0) -> list[PushResult]:
    """Send every account JWT of ``chain`` (the system account's last) to the server at
    ``url``; each server's answer is logged and returned. Raises :class:`CredsError` if the
    chain's resolver is not ``full`` (a ``memory`` resolver takes changes by a reload)."""
    if chain.resolver != "full":
        raise CredsError(f"{chain.paths.root}: the chain's resolver is {chain.resolver!r}; "
                         "only a 'full' resolver accepts pushed account JWTs — reload the "
                         "server instead (`nats-server --signal reload`)")
    creds = chain.paths.seed(".push-sys").with_suffix(".creds")
    chain.system_user_creds(creds, now=now, ttl_s=_PUSH_TTL_S)
    tls = client_tls_context(chain.paths.ca.cert, chain.paths.client_cert(SYSTEM))
    results: list[PushResult] = []
    try:
        async with connect(url, name="xypipe-creds-push", creds=str(creds), tls=tls,
                           connect_timeout=timeout_s, max_reconnect_attempts=0) as nc:
            jwts = chain.account_jwts()
            order = [a for a in jwts if a != chain.system_public] + [chain.system_public]
            for account in order:
                reply = await nc.request(CLAIMS_UPDATE, jwts[account].encode(),
                                         timeout=timeout_s)
                results.append(_answer(account, reply.data))
    finally:
        _remove(creds)
    for r in results:
        if r.ok:
            _log.info("pushed an account JWT", code=CREDS_ACCOUNTS_PUSHED, account=r.account,
                      url=url, answer=r.message)
        else:
            _log.warning("the server refused an account JWT", code=CREDS_PUSH_REFUSED,
                         account=r.account, url=url, answer=r.message)
    return results
