"""Which credentials each process signs in with (xypipe/_nats_signin.py): from the config and
the process's role, per-process overrides first — and why a sign-in was refused, told from
the credentials where the server says only "Authorization Violation"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from xypipe import parse_config
from xypipe._config import AppConfig
from xypipe._creds import ChainOptions, init_chain
from xypipe._creds._pki import CertFiles
from xypipe._errors import CredsError
from xypipe._nats import Refusal
from xypipe._nats_signin import sign_in

AGGREGATOR = [{"use": "ingest"}, {"use": "conflate"}, {"use": "snapshot"}, {"use": "publish"}]
GATEWAY = [{"use": "nats_source", "subjects": ["xy.md.>"]},
           {"use": "gateway", "public_key": "k.pem", "allowed_origins": ["*"]}]


def tree(nats: dict[str, object], processes: dict[str, dict[str, object]] | None = None,
         ) -> AppConfig:
    """An aggregator, a gateway and the demo publisher (main) on ``nats``."""
    return parse_config({
        "nats": nats,
        "processes": {"aggregator": {}, "gateway": {}, **(processes or {})},
        "pipelines": {
            "aggregator": {"process": "aggregator", "stages": AGGREGATOR},
            "gateway": {"process": "gateway", "stages": GATEWAY},
            "main": {"stages": [{"use": "publisher"}]},
        },
    }, "t.toml")


def test_a_chain_gives_each_process_its_role_s_creds_and_client_certificate() -> None:
    cfg = tree({"url": "tls://nats.internal:4222", "chain": "/run/secrets/nats"})
    chain = Path("/run/secrets/nats")
    for process, role in (("aggregator", "aggregator"), ("gateway", "gateway"),
                          ("main", "adapter")):
        s = sign_in(cfg, process)
        assert (s.role, s.principal, s.method) == (role, role, "chain")
        assert s.creds == chain / "creds" / f"{role}.creds"
        assert s.ca == chain / "tls" / "ca.pem" and s.tls
        assert s.cert == CertFiles(chain / "tls" / f"{role}.pem", chain / "tls" / f"{role}.key")
        assert s.inbox_prefix == f"_INBOX.{role}"


def test_a_process_s_own_table_wins_file_by_file() -> None:
    cfg = tree({"url": "tls://nats.internal:4222", "chain": "/chain",
                "tls": {"ca": "/pki/ca.pem"}},
               {"gateway": {"nats": {"creds": "/gw/gateway.creds",
                                     "tls": {"cert": "/gw/c.pem", "key": "/gw/c.key"}}}})
    gw = sign_in(cfg, "gateway")
    assert (gw.method, gw.creds, gw.chain) == ("creds", Path("/gw/gateway.creds"), None)
    assert gw.ca == Path("/pki/ca.pem")  # the shared CA
    assert gw.cert == CertFiles(Path("/gw/c.pem"), Path("/gw/c.key"))
    assert gw.inbox_prefix == "_INBOX.gateway"  # a .creds file signs in as a role
    agg = sign_in(cfg, "aggregator")
    assert agg.creds == Path("/chain/creds/aggregator.creds")
    assert agg.ca == Path("/pki/ca.pem")  # [nats.tls] ca over the chain's
    assert agg.cert == CertFiles(Path("/chain/tls/aggregator.pem"),
                                 Path("/chain/tls/aggregator.key"))


def test_user_and_password_and_the_embedded_bus_sign_in_as_before() -> None:
    cfg = tree({"url": "nats://n:4222", "user": "xy", "password": "s3cret"})
    s = sign_in(cfg, "gateway")
    assert (s.method, s.user, s.principal, s.inbox_prefix, s.tls) == (
        "user", "xy", "xy", "_INBOX", False)
    assert "s3cret" not in repr(s)
    embedded = tree({"url": "embedded"})
    s = sign_in(embedded, "gateway", embedded_nkey="/data/auth/gateway.nk")
    assert (s.method, s.nkey, s.principal, s.inbox_prefix, s.tls) == (
        "nkey", "/data/auth/gateway.nk", "gateway", "_INBOX.gateway", False)


def test_missing_files_and_an_expired_jwt_are_named_before_connecting(tmp_path: Path) -> None:
    chain = init_chain(tmp_path / "chain", ChainOptions(roles=("gateway",)), now=time.time())
    cfg = tree({"url": "tls://localhost:4222", "chain": str(chain.paths.root)})
    sign_in(cfg, "gateway").check(time.time())
    with pytest.raises(CredsError, match=r"aggregator\.creds: no such file .*role 'aggregator'"):
        sign_in(cfg, "aggregator").check(time.time())
    chain.issue_user("gateway", now=time.time() - 120, ttl_s=60)
    with pytest.raises(CredsError, match=r"the user JWT expired \d+ s ago; rotate it "
                                         r"\(xypipe creds rotate gateway\)"):
        sign_in(cfg, "gateway").check(time.time())


def test_a_refused_sign_in_is_explained_by_the_credentials(tmp_path: Path) -> None:
    chain = init_chain(tmp_path / "chain", ChainOptions(roles=("gateway", "adapter")),
                       now=time.time())
    cfg = tree({"url": "tls://localhost:4222", "chain": str(chain.paths.root)})
    refused = Refusal("auth", "connect", None, "Authorization Violation")
    gateway, adapter = sign_in(cfg, "gateway"), sign_in(cfg, "main")
    assert gateway.explain(refused, time.time()) == refused  # nothing known: still "auth"
    chain.issue_user("gateway", now=time.time() - 120, ttl_s=60)
    assert gateway.explain(refused, time.time()).reason == "expired"
    chain.revoke("adapter", now=time.time())
    assert adapter.explain(refused, time.time()).reason == "revoked"
    permission = Refusal("permission", "publish", "xy.md.x", "Permissions Violation …")
    assert adapter.explain(permission, time.time()) == permission
