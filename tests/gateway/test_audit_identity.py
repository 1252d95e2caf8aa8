"""Audit lines say who, what and how it ended, and the logs never carry a secret.

A real gateway on a real nats-server, real WebSocket and HTTP clients: a good hello, bad hellos,
an ACL refusal, refreshes refused for a bad token and for another subject's token, admin
requests with no token, a bad token, no admin role and the admin role. Then every JSON log line
is checked: no token, key, seed or password used anywhere appears in it; no identity field is
masked; every audit line has ``sub``, ``action`` and ``outcome``.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import nkeys
import trio
from cryptography.hazmat.primitives import serialization
from gw_support import JsonLogCapture, Keys, claims, forge, http_port, running_gateway, ws_client
from test_ws_admin import http

from xypipe._log import get_logger
from xypipe._redact import IDENTITY_FIELDS
from xypipe.contracts import GroupRef, RefreshToken, Subscribe

FX = ["xy.md.*.fx", "xy.md.*.fx.>"]
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.")


def _private_pem(keys: Keys) -> str:
    return keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


async def test_audit_lines_name_the_principal_and_the_logs_hold_no_secret(
    nats_server, keys: Keys, tmp_path: Path, json_logs: JsonLogCapture
) -> None:
    other = Keys(tmp_path / "other") if (tmp_path / "other").mkdir() is None else None
    assert other is not None
    alice = keys.token("alice", FX)
    tokens = {
        "alice": alice,
        "forged_alg_none": forge({"alg": "none", "typ": "JWT"}, claims("mallory")),
        "other_key": other.token("mallory"),
        "expired": keys.token("alice", FX, ttl_s=60, now=time.time() - 3600),
        "mallory": keys.token("mallory", FX),
        "bob": keys.token("bob"),
        "root": keys.token("root", roles=["admin"]),
    }
    password = "pw-" + secrets.token_urlsafe(16)
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()
    pem = _private_pem(keys)

    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        async with ws_client(port) as c:
            assert (await c.hello(alice)).HasField("welcome")
            # ACL: alice may read fx only.
            await c.send(subscribe=Subscribe(groups=[GroupRef(group="rates")]))
            await c.recv_until(lambda f: f.HasField("error"))
            # A refresh with a token that does not verify: refused, session kept.
            await c.send(refresh=RefreshToken(token=tokens["other_key"]))
            await c.recv_until(lambda f: f.HasField("error"))
            # A refresh with someone else's valid token: refused, session ended.
            await c.send(refresh=RefreshToken(token=tokens["mallory"]))
            await c.recv_until(lambda f: f.HasField("error"))
        for name in ("forged_alg_none", "other_key", "expired"):
            async with ws_client(port) as c:
                assert (await c.hello(tokens[name])).HasField("error"), name
        path = "/admin/feature-flags"
        assert (await http(port, "GET", path))[0] == 401
        assert (await http(port, "GET", path, tokens["other_key"]))[0] == 401
        assert (await http(port, "PUT", path, tokens["bob"],
                           {"name": "gateway.force_level", "value": 1}))[0] == 403
        assert (await http(port, "PUT", path, tokens["root"],
                           {"name": "gateway.disabled_groups", "value": ["rates"]}))[0] == 200
        with trio.fail_after(10):
            while not json_logs.find(action="admin.flag.applied"):  # noqa: ASYNC110
                await trio.sleep(0.02)  # the KV watch applies the change: a state to poll
    # Secrets that reach a logger by any road: fields named for them, values shaped like them.
    get_logger("audit-test").warning(
        "connect to nats://127.0.0.1:4222 refused", code="XY-NATS-005", password=password,
        nkey_seed=seed, error=f"could not load {seed} / {pem}",
        authorization=f"Bearer {alice}", note=f"token={tokens['root']}")

    text = json_logs.stream.getvalue()
    lines = json_logs.lines()
    # (a) no secret value anywhere.
    for name, token in tokens.items():
        assert token not in text, f"the {name} token is in the logs"
    assert _JWT_SHAPE.search(text) is None
    assert password not in text and seed not in text
    assert "PRIVATE KEY" not in text
    body = "".join(pem.strip().splitlines()[1:-1])
    assert body[:40] not in text.replace("\\n", "")
    # (b) identities are never masked.
    for line in lines:
        for field in IDENTITY_FIELDS & line.keys():
            value = str(line[field])
            assert "***" not in value and "[redacted" not in value, (field, line)
    # (c) every audit line has its principal, action and outcome.
    audits = [x for x in lines if x.get("audit")]
    assert audits
    for line in audits:
        for field in ("sub", "action", "outcome"):
            assert isinstance(line.get(field), str) and line[field], (field, line)

    def one(**match: object) -> dict[str, object]:
        found = json_logs.find(audit=True, **match)
        assert len(found) == 1, (match, found)
        return found[0]

    assert one(action="auth", outcome="allowed")["sub"] == "alice"
    assert one(action="subscribe", outcome="denied")["sub"] == "alice"
    assert one(action="refresh", outcome="denied", error_code="XY-AUTH-002")["sub"] == "alice"
    other_subject = one(action="refresh", outcome="denied", reason="token for another subject")
    assert other_subject["sub"] == "alice" and other_subject["presented_subject"] == "mallory"
    refused = json_logs.find(audit=True, action="auth", outcome="denied")
    assert {(x["sub"], x["claimed_sub"]) for x in refused} == {
        ("(anonymous)", "mallory"), ("(anonymous)", "alice")}
    admin = json_logs.find(audit=True, action="admin", outcome="denied")
    assert sorted((x["sub"], x.get("claimed_sub") or "") for x in admin) == [
        ("(anonymous)", ""), ("(anonymous)", "mallory"), ("bob", "")]
    assert one(action="admin.flag", outcome="allowed")["sub"] == "root"
    assert one(action="admin.flag.applied", outcome="applied")["sub"] == "root"
    # The deliberate line: masked by field name and by value shape, its message intact.
    [leak] = json_logs.find(logger="xypipe.audit-test")
    assert leak["password"] == "[redacted]" and leak["nkey_seed"] == "[redacted]"
    assert leak["error"].count("[redacted:") == 2
    assert leak["note"].startswith("token=[redacted:jwt #")
