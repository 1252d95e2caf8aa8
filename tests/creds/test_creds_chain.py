"""The trust chain's files, JWTs and command line, without a server (the server's verdict on
them is tests/creds/test_creds_server.py)."""

from __future__ import annotations

import base64
import json
import re
import shlex
import stat
import time
from pathlib import Path

import pytest
from creds_support import make_chain

from xypipe import load_config
from xypipe._bus_layout import bus_layout
from xypipe._cli import main
from xypipe._creds import (
    Chain,
    ClientAuth,
    CredsFollower,
    KeyKind,
    NKey,
    decode,
    encode,
    parse_creds,
)
from xypipe._creds._rotation import FileId, Reconnect, Warn
from xypipe._errors import ChainExistsError, CredsError, JwtError, UnknownRoleError
from xypipe._nats_roles import BusLayout
from xypipe._role_grants import ROLES, permissions, role_table_markdown

ROOT = Path(__file__).resolve().parents[2]
#: What a secret looks like in text: an NKey seed, a PEM private key.
SEED = re.compile(r"S[OAU][A-Z2-7]{56}")
PEM_KEY = "PRIVATE KEY-----"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- JWTs


def test_a_jwt_round_trips_and_a_tampered_one_is_refused() -> None:
    account, user = NKey.generate(KeyKind.ACCOUNT), NKey.generate(KeyKind.USER)
    token = encode("user", subject=user.public, name="gateway", signer=account, now=1000,
                   expires_at=1600, nats={"pub": {"allow": ["a.>"]}})
    claims = decode(token, kind="user")
    assert (claims.subject, claims.issuer, claims.issued_at, claims.expires_at) == (
        user.public, account.public, 1000, 1600)
    assert claims.nats["pub"] == {"allow": ["a.>"]} and claims.nats["version"] == 2
    header, body, sig = token.split(".")
    forged = json.loads(_unb64(body))
    forged["nats"]["pub"] = {"allow": [">"]}
    with pytest.raises(JwtError, match="signature does not verify"):
        decode(f"{header}.{_b64(json.dumps(forged).encode())}.{sig}")
    with pytest.raises(JwtError, match="expected a account JWT"):
        decode(token, kind="account")
    with pytest.raises(JwtError, match="must be signed by a account key, got a user key"):
        encode("user", subject=user.public, name="x", signer=user, now=0, nats={})
    with pytest.raises(JwtError, match="three dot-separated"):
        decode("not-a-jwt")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_a_seed_of_the_wrong_kind_is_named() -> None:
    with pytest.raises(CredsError, match=r"expected an NKey seed of user kind \(SU…\), got a "
                                         "account seed"):
        NKey.from_seed(NKey.generate(KeyKind.ACCOUNT).seed, KeyKind.USER)
    key = NKey.generate(KeyKind.USER)
    assert key.seed.decode() not in repr(key) and key.public in repr(key)


# --------------------------------------------------------------------------- the chain on disk


def test_init_keeps_secrets_private_and_the_server_config_holds_none(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "chain")
    root = chain.paths.root
    assert set(chain.roles) == set(ROLES)
    for d in ("", "keys", "creds", "tls", "tokens"):
        assert _mode(root / d) == 0o700, d
    secrets = [*root.glob("keys/*.nk"), *root.glob("creds/*.creds"), *root.glob("tls/*.key"),
               chain.paths.token_private_key]
    assert len(secrets) == 4 + len(ROLES) + (1 + 1 + len(ROLES) + 1) + 1
    assert all(_mode(p) == 0o600 for p in secrets)
    conf = chain.paths.server_config.read_text()
    assert not SEED.search(conf) and PEM_KEY not in conf
    assert chain.operator_public not in conf  # the operator comes as a JWT file, by path
    assert str(chain.paths.operator_jwt) in conf and '"verify": true' in conf
    for public in (*root.glob("*.jwt"), *root.glob("accounts/*.jwt"), root / "chain.json"):
        assert not SEED.search(public.read_text()), public


def test_each_user_jwt_carries_exactly_its_roles_permissions(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "chain", user_ttl_s=900.0)
    signing = NKey.from_seed(chain.paths.seed(f"{chain.account_name}-signing").read_bytes())
    for role in chain.roles:
        jwt, seed = parse_creds(chain.creds_file(role).read_text())
        claims = decode(jwt, kind="user")
        assert seed is not None and NKey.from_seed(seed).public == claims.subject
        assert claims.subject == chain.user_public(role)
        assert claims.issuer == signing.public and claims.issuer_account == chain.account_public
        assert claims.expires_at is not None and claims.expires_at - claims.issued_at == 900
        want = permissions(role, BusLayout())
        assert claims.nats["pub"] == {"allow": list(want.publish)}
        assert claims.nats["sub"] == {"allow": list(want.subscribe)}
    account = chain.account_claims()
    assert account.issuer == chain.operator_public
    assert account.nats["signing_keys"] == [signing.public]
    limits = account.nats["limits"]
    assert isinstance(limits, dict) and limits["disk_storage"] == -1  # JetStream on


def test_rotate_reissues_one_users_jwt_and_touches_nothing_else(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "chain")
    before = {p: p.read_bytes() for p in chain.paths.root.rglob("*") if p.is_file()}
    issued = chain.issue_user("gateway", now=time.time() + 5)
    after = {p: p.read_bytes() for p in chain.paths.root.rglob("*") if p.is_file()}
    assert {p for p in after if after[p] != before.get(p)} == {chain.creds_file("gateway")}
    old, new = (decode(parse_creds(x.decode())[0]) for x in
                (before[chain.creds_file("gateway")], after[chain.creds_file("gateway")]))
    assert new.subject == old.subject == issued.user  # the same key, a fresher JWT
    assert new.expires_at is not None and old.expires_at is not None
    assert new.expires_at > old.expires_at and issued.revoked is None
    assert _mode(chain.creds_file("gateway")) == 0o600


def test_a_new_key_revokes_the_old_one_and_a_revoked_key_is_never_reissued(
    tmp_path: Path
) -> None:
    chain = make_chain(tmp_path / "chain")
    old = chain.user_public("adapter")
    # The adapter's old name, "publisher", names the same user.
    issued = chain.issue_user("publisher", now=time.time(), new_key=True)
    assert issued.role == "adapter" and issued.path == chain.creds_file("adapter")
    assert issued.revoked == old and issued.user != old
    assert old in chain.revocations()
    reloaded = Chain.load(chain.paths.root)
    assert reloaded.user_public("adapter") == issued.user
    # The server's preloaded account is the revoking one.
    assert reloaded.account_jwts()[chain.account_public] in \
        chain.paths.server_config.read_text()
    chain.revoke("adapter", now=time.time())
    with pytest.raises(CredsError, match=r"is revoked; issue a new key \(`xypipe creds "
                                         r"rotate adapter --new-key`\)"):
        chain.issue_user("adapter", now=time.time())


def test_an_existing_chain_is_never_overwritten_and_unknown_roles_are_named(
    tmp_path: Path
) -> None:
    chain = make_chain(tmp_path / "chain")
    with pytest.raises(ChainExistsError) as info:
        make_chain(tmp_path / "chain")
    assert info.value.code == "XY-SEC-002" and "never overwritten" in str(info.value)
    with pytest.raises(UnknownRoleError, match="role 'root' is not in the chain"):
        chain.issue_user("root", now=time.time())
    with pytest.raises(UnknownRoleError, match="roles: root not known"):
        make_chain(tmp_path / "other", roles=("gateway", "root"))
    with pytest.raises(CredsError, match="no trust chain here"):
        Chain.load(tmp_path / "nowhere")


# --------------------------------------------------------------------------- the command line


def test_creds_show_prints_the_claims_and_never_the_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["creds", "init", str(tmp_path / "c"), "--ttl", "600", "--role", "gateway",
                 "--role", "aggregator"]) == 0
    init = capsys.readouterr()
    # Its steps are drawn on a terminal only (tests/test_cli.py); here stderr is captured.
    assert init.err == "" and "gateway.creds" in init.out
    path = tmp_path / "c" / "creds" / "gateway.creds"
    _, seed = parse_creds(path.read_text())
    assert seed is not None
    assert main(["creds", "show", str(path)]) == 0
    shown = capsys.readouterr()
    assert "user 'gateway'" in shown.out and "subscribe allow: xy.exec.health" in shown.out
    assert "seed     present in the file (not shown)" in shown.out
    assert main(["creds", "show", "--json", str(path)]) == 0
    as_json = capsys.readouterr()
    assert json.loads(as_json.out)["nats"]["sub"]["allow"][-1] == "xy.md.>"
    for text in (init.out, init.err, shown.out, shown.err, as_json.out, as_json.err):
        assert seed.decode() not in text and not SEED.search(text) and PEM_KEY not in text


def test_creds_commands_name_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.creds"
    bad.write_text("hello")
    assert main(["creds", "show", str(bad)]) == 1
    assert f"{bad}: expected a .creds file" in capsys.readouterr().err
    assert main(["creds", "init", str(tmp_path / "c"), "--role", "gateway"]) == 0
    capsys.readouterr()
    assert main(["creds", "rotate", "adapter", "--dir", str(tmp_path / "c")]) == 1
    assert "role 'adapter' is not in the chain" in capsys.readouterr().err
    assert main(["creds", "push", "nats://127.0.0.1:1", "--dir", str(tmp_path / "c")]) == 1
    assert "only a 'full' resolver accepts pushed account JWTs" in capsys.readouterr().err


def test_creds_init_takes_the_stream_names_from_a_config(tmp_path: Path) -> None:
    config = ROOT / "configs" / "demo.toml"
    assert main(["creds", "init", str(tmp_path / "c"), "--config", str(config)]) == 0
    chain = Chain.load(tmp_path / "c")
    assert chain.layout == bus_layout(load_config(config))


# --------------------------------------------------------------------------- following a file


def test_the_follower_signs_in_again_for_a_valid_rotation_and_warns_otherwise(
    tmp_path: Path
) -> None:
    chain = make_chain(tmp_path / "chain", roles=("reader",), user_ttl_s=600.0)
    path = chain.creds_file("reader")
    follower = CredsFollower(path, warn_before_s=60)
    first = FileId(1, 1, 1)
    now = time.time()
    follower.start(first, path.read_text())
    assert follower.observe(first, "", now) == []
    # Close to expiry, unrotated: one warning, not one per look.
    [warn] = follower.observe(first, "", now + 570)
    assert isinstance(warn, Warn) and warn.code == "XY-SEC-016"
    assert follower.observe(first, "", now + 575) == []
    [warn] = follower.observe(first, "", now + 601)
    assert isinstance(warn, Warn) and warn.code == "XY-SEC-017"
    # A half-written or foreign file is not used, and said once.
    broken = FileId(2, 2, 2)
    [warn] = follower.observe(broken, "-----BEGIN NATS USER JWT-----\nxx", now + 602)
    assert warn.code == "XY-SEC-015" and follower.observe(broken, "", now + 603) == []
    # A valid rotation: sign in again; the expiry warnings start over.
    issued = chain.issue_user("reader", now=now + 604)
    rotated = FileId(3, 3, 3)
    assert follower.changed(rotated)
    assert follower.observe(rotated, path.read_text(), now + 605) == [
        Reconnect(issued.user, issued.expires_at)]
    assert follower.observe(rotated, "", now + 606) == []


# --------------------------------------------------------------------------- the docs


def test_the_security_docs_role_table_is_the_grant_table() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    begin, end = "<!-- role-table: begin -->\n", "<!-- role-table: end -->"
    assert begin in text and end in text, "docs/security.md lost its generated role table"
    documented = text.split(begin, 1)[1].split(end, 1)[0]
    assert documented == role_table_markdown(BusLayout()), (
        "docs/security.md's role table differs from xypipe/_role_grants.py; paste in the "
        "output of: python -c 'from xypipe._role_grants import role_table_markdown; "
        "from xypipe._nats_roles import BusLayout; print(role_table_markdown(BusLayout()))'")


def test_creds_nsc_prints_the_users_permissions_for_an_existing_operator(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["creds", "nsc", "gateway", "--account", "DESK"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[:7] == ["nsc", "add", "user", "--account", "DESK", "--name", "gateway"]
    want = permissions("gateway", BusLayout())
    assert argv[argv.index("--allow-pub") + 1].split(",") == list(want.publish)
    assert argv[argv.index("--allow-sub") + 1].split(",") == list(want.subscribe)
    assert not [s for s in want.publish if s.startswith("$JS.API.>")]


def test_client_auth_names_what_the_server_would_refuse_before_connecting(
    tmp_path: Path
) -> None:
    chain = make_chain(tmp_path / "chain", roles=("gateway",))
    auth = ClientAuth.from_chain(chain.paths.root, "gateway")
    now = time.time()
    assert auth.check(now).subject == chain.user_public("gateway")
    options = auth.connect_options()
    assert options["creds"] == str(chain.creds_file("gateway"))
    assert options["inbox_prefix"] == "_INBOX.gateway" and options["tls"].verify_mode
    with pytest.raises(CredsError, match=r"the user JWT expired \d+ s ago; rotate it "
                                         r"\(xypipe creds rotate gateway\)"):
        auth.check(now + 2 * 86400)
    with pytest.raises(CredsError, match=r"reader\.creds: no such file"):
        ClientAuth.from_chain(chain.paths.root, "reader").check(now)
