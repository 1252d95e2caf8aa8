"""The token key set: a PEM file, a key directory or a JWKS file, selected by ``kid``; reloads
that keep the keys in force when a file is bad; ``xypipe token keygen --dir`` and minted kids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from gw_support import JsonLogCapture, claims, forge, new_key, public_pem

from xypipe._cli import main
from xypipe._errors import AuthError
from xypipe._gateway._auth import AuthInvalid, AuthUnknownKid, TokenVerifier
from xypipe._gateway._keyset import kid_of, load_keyset
from xypipe._gateway._keywatch import KeyWatch
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, mint
from xypipe._log import get_logger
from xypipe._metrics import Metrics


def _token(key, kid: str | None, subject: str = "alice") -> str:  # type: ignore[no-untyped-def]
    return mint(key, subject=subject, allow=["xy.md.>"], now=time.time(), kid=kid)


def _verifier(source: Path) -> TokenVerifier:
    return TokenVerifier.from_file(source, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)


def test_a_directory_selects_the_key_by_kid(tmp_path: Path) -> None:
    a, b = new_key(), new_key("es256")
    (tmp_path / "a.pub.pem").write_bytes(public_pem(a))
    (tmp_path / "b.pem").write_bytes(public_pem(b))
    (tmp_path / "a.key.pem").write_bytes(b"a private key is never read")
    (tmp_path / "notes.txt").write_text("ignored")
    v = _verifier(tmp_path)
    assert v.keys.kids == {"a", "b"}
    assert v.verify(_token(a, "a"), time.time()).kid == "a"
    assert v.verify(_token(b, "b"), time.time()).kid == "b"
    with pytest.raises(AuthUnknownKid, match="kid 'c' names no loaded key"):
        v.verify(_token(a, "c"), time.time())
    with pytest.raises(AuthUnknownKid, match="no 'kid' and the gateway holds several keys"):
        v.verify(_token(a, None), time.time())
    # The right kid with the wrong key: the signature fails, naming the key tried.
    with pytest.raises(AuthInvalid, match="does not verify with the gateway's key 'a'"):
        v.verify(_token(new_key(), "a"), time.time())
    # The algorithm follows the selected key, never the token.
    with pytest.raises(AuthInvalid, match="'HS256' refused"):
        v.verify(forge({"alg": "HS256", "kid": "b"}, claims(), public_pem(b)), time.time())


def test_one_key_in_a_directory_accepts_tokens_without_kid(tmp_path: Path) -> None:
    a = new_key()
    (tmp_path / "a.pem").write_bytes(public_pem(a))
    v = _verifier(tmp_path)
    assert v.verify(_token(a, None), time.time()).kid == "a"
    with pytest.raises(AuthUnknownKid):
        v.verify(_token(a, "b"), time.time())


def test_a_single_pem_file_keeps_working_whatever_the_kid(tmp_path: Path) -> None:
    a = new_key()
    path = tmp_path / "jwt-public.pem"
    path.write_bytes(public_pem(a))
    v = _verifier(path)
    assert v.keys.kids == {"jwt-public"}
    for kid in (None, "jwt-public", "jwt-private"):
        assert v.verify(_token(a, kid), time.time()).subject == "alice"


def test_a_jwks_file(tmp_path: Path) -> None:
    a, b = new_key(), new_key("rs256")
    doc = {"keys": [
        {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(a.public_key())), "kid": "k1"},
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(b.public_key())), "kid": "k2"},
    ]}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    v = _verifier(path)
    assert v.verify(_token(a, "k1"), time.time()).kid == "k1"
    assert v.verify(_token(b, "k2"), time.time()).kid == "k2"
    with pytest.raises(AuthUnknownKid):
        v.verify(_token(a, "k3"), time.time())


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.pem", b"not a key", "'{path}': not a PEM public key"),
    ("p384.pem", "p384", "'{path}': EC public key on secp384r1"),
    ("keys.json", b"{", "JWKS file '{path}': not JSON"),
    ("keys.json", b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]}',
     "JWKS file '{path}': keys[0] has no \"kid\""),
    ("keys.json", b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "z"}]}',
     "JWKS file '{path}': key 'z'"),
    ("keys.json", b'{"keys": []}', "JWKS file '{path}': expected {{\"keys\": [...]}}"),
])
def test_bad_key_files_are_named(tmp_path: Path, name: str, content: object,
                                 message: str) -> None:
    path = tmp_path / name
    if content == "p384":
        from cryptography.hazmat.primitives.asymmetric import ec
        path.write_bytes(public_pem(ec.generate_private_key(ec.SECP384R1())))
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(AuthError) as info:
        load_keyset(path if name.endswith(".json") else tmp_path)
    assert message.format(path=path) in info.value.message
    assert info.value.code == "XY-AUTH-020"


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="no public key"):
        load_keyset(tmp_path)


def test_a_reload_applies_a_new_set_and_keeps_the_old_one_when_a_file_is_bad(
        tmp_path: Path, json_logs: JsonLogCapture) -> None:
    a, b = new_key(), new_key()
    (tmp_path / "a.pem").write_bytes(public_pem(a))
    v = _verifier(tmp_path)
    removed: list[frozenset[str]] = []
    metrics = Metrics()
    capture = json_logs
    log = get_logger("test.keys")
    watch = KeyWatch(str(tmp_path), v, log=log, metrics=metrics, surface="ws",
                     interval_s=0, on_removed=removed.append)
    (tmp_path / "b.pem").write_bytes(public_pem(b))
    (tmp_path / "c.pem").write_bytes(b"half-written")
    assert not watch.reload("test")
    assert v.keys.kids == {"a"}  # nothing accepted is lost
    bad = capture.find(code="XY-AUTH-020")
    assert len(bad) == 1 and str(tmp_path / "c.pem") in bad[0]["reason"]
    assert bad[0]["kept"] == ["a"]
    assert metrics.sample("auth_key_reloads_total", {"surface": "ws", "result": "refused"}) == 1
    (tmp_path / "c.pem").unlink()
    assert watch.reload("test") and v.keys.kids == {"a", "b"}
    assert metrics.sample("auth_keys_loaded", {"surface": "ws"}) == 2
    (tmp_path / "a.pem").unlink()
    assert watch.reload("test") and removed == [frozenset({"a"})]
    with pytest.raises(AuthUnknownKid):
        v.verify(_token(a, "a"), time.time())
    assert capture.find(code="XY-AUTH-022")[-1]["removed"] == ["a"]


def test_keygen_dir_writes_a_new_kid_and_token_names_it(tmp_path: Path, capsys) -> None:
    keys = tmp_path / "token-keys"
    assert main(["token", "keygen", "--dir", str(keys)]) == 0
    assert main(["token", "keygen", "--dir", str(keys)]) == 0
    privates = sorted(keys.glob("*.key.pem"))
    assert len(privates) == 2 and privates[0].name != privates[1].name
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in privates)
    capsys.readouterr()
    assert main(["token", "--key", str(privates[1]), "--sub", "zed"]) == 0
    token = capsys.readouterr().out.strip()
    kid = kid_of(privates[1])
    assert jwt.get_unverified_header(token)["kid"] == kid
    v = _verifier(keys)
    assert v.keys.kids == {kid_of(p) for p in privates}
    assert v.verify(token, time.time()).kid == kid
    assert main(["token", "keygen"]) == 2  # neither a directory nor --dir: a usage error
