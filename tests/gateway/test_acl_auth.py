"""Subject ACL and JWT verification (pure cores: no sockets, wall time passed in)."""

from __future__ import annotations

import time

import pytest
from gw_support import Keys, claims, forge, public_pem

from xypipe._errors import AuthError
from xypipe._gateway._acl import Acl, covers, group_subjects
from xypipe._gateway._auth import AuthExpired, AuthInvalid, TokenVerifier
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER


@pytest.mark.parametrize(("granted", "requested", "expected"), [
    ("xy.md.>", "xy.md.tick.fx", True),
    ("xy.md.>", "xy.md.tick.fx.*", True),
    ("xy.md.>", "xy.md", False),
    ("xy.md.*.fx", "xy.md.tick.fx", True),
    ("xy.md.*.fx", "xy.md.tick.fx.1", False),
    ("xy.md.*.fx.>", "xy.md.tick.fx.*", True),
    ("xy.md.tick.fx.*", "xy.md.tick.fx.>", False),
    ("xy.md.tick.fx.1", "xy.md.tick.fx.*", False),
    ("xy.md.tick.fx.*", "xy.md.tick.fx.1", True),
    ("xy.md.tick.fx", "xy.md.tick.rates", False),
    ("xy.*", "xy.md.tick", False),
    (">", "xy.md.tick.fx", True),
])
def test_covers_follows_nats_wildcards(granted: str, requested: str, expected: bool) -> None:
    assert covers(granted, requested) is expected


def test_a_whole_group_needs_snapshot_and_every_shard_subject() -> None:
    assert group_subjects("fx") == ["xy.md.snapshot.fx", "xy.md.tick.fx", "xy.md.tick.fx.*"]
    assert group_subjects("fx", [3, 1]) == [
        "xy.md.snapshot.fx", "xy.md.tick.fx.1", "xy.md.tick.fx.3"]
    whole = Acl(["xy.md.*.fx", "xy.md.*.fx.>"])
    assert whole.check_group("fx").allowed
    assert not whole.check_group("rates").allowed
    one_shard = Acl(["xy.md.snapshot.fx", "xy.md.tick.fx.1"])
    assert one_shard.check_group("fx", [1]).allowed
    decision = one_shard.check_group("fx")
    assert not decision.allowed and decision.denied_subject == "xy.md.tick.fx"


def _verifier(keys: Keys, **kw) -> TokenVerifier:  # type: ignore[no-untyped-def]
    return TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE,
                         leeway_s=kw.pop("leeway_s", 5.0), **kw)


@pytest.mark.parametrize("kind", ["ed25519", "es256", "rs256"])
def test_valid_token_yields_principal_with_patterns_and_roles(tmp_path, kind: str) -> None:
    keys = Keys(tmp_path, kind)
    p = _verifier(keys).verify(keys.token("ann", ["xy.md.*.fx"], roles=["admin"]), time.time())
    assert p.subject == "ann" and p.acl.patterns == ("xy.md.*.fx",)
    assert p.has_role("admin") and p.expires_at > time.time()


def test_expiry_and_not_before_use_the_given_wall_time_and_leeway(keys: Keys) -> None:
    v = _verifier(keys, leeway_s=5.0)
    now = 1_900_000_000.0
    token = keys.token(now=now, ttl_s=60)
    assert v.verify(token, now + 64).subject == "alice"  # within the leeway
    with pytest.raises(AuthExpired, match="expired"):
        v.verify(token, now + 66)
    with pytest.raises(AuthExpired, match="nbf"):
        v.verify(token, now - 10)


@pytest.mark.parametrize(("header", "message"), [
    ({"alg": "none"}, "'none' refused"),
    ({"alg": "HS256"}, "'HS256' refused"),
    ({"alg": "RS256"}, "'RS256' refused"),
])
def test_algorithm_comes_from_the_key_never_from_the_token(keys: Keys, header, message) -> None:
    token = forge(header, claims(), keys.public_path.read_bytes())
    with pytest.raises(AuthInvalid, match=message):
        _verifier(keys).verify(token, time.time())


def test_audience_issuer_signature_and_claims_are_checked(keys: Keys, tmp_path) -> None:
    v = _verifier(keys)
    now = time.time()
    with pytest.raises(AuthInvalid, match="audience"):
        v.verify(keys.token(audience="other"), now)
    with pytest.raises(AuthInvalid, match="issuer"):
        v.verify(keys.token(issuer="other"), now)
    (tmp_path / "x").mkdir()
    with pytest.raises(AuthInvalid, match="signature"):
        v.verify(Keys(tmp_path / "x").token(), now)
    with pytest.raises(AuthInvalid, match="claim 'allow'"):
        v.verify(keys.token(allow=["not a pattern"]), now)
    with pytest.raises(AuthInvalid, match="lifetime"):
        _verifier(keys, max_lifetime_s=60).verify(keys.token(ttl_s=3600), now)


def test_unusable_public_keys_are_refused_with_a_reason(tmp_path) -> None:
    with pytest.raises(AuthError, match="not a PEM public key"):
        TokenVerifier(b"nonsense", issuer="i", audience="a")
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(AuthError, match="expected P-256"):
        TokenVerifier(public_pem(p384), issuer="i", audience="a")
    with pytest.raises(AuthError, match="No such file"):
        TokenVerifier.from_file(tmp_path / "missing.pem", issuer="i", audience="a")
