"""``xypipe token``: mints tokens the gateway accepts; ``keygen`` writes a keypair."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from xypipe._cli import main
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER

REPO = Path(__file__).resolve().parents[2]


def test_keygen_then_token_verifies_with_the_public_half(tmp_path, capsys) -> None:
    assert main(["token", "keygen", str(tmp_path), "--name", "k"]) == 0
    assert (tmp_path / "k.key.pem").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["token", "--key", str(tmp_path / "k.key.pem"), "--sub", "zed",
                 "--allow", "xy.md.*.fx", "--role", "admin", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    v = TokenVerifier.from_file(tmp_path / "k.pub.pem", issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    p = v.verify(token, time.time())
    assert p.subject == "zed" and p.has_role("admin") and p.acl.patterns == ("xy.md.*.fx",)
    assert main(["token", "keygen", str(tmp_path), "--name", "k"]) == 1  # never overwrites


def test_the_committed_dev_keypair_matches(capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["token", "--sub", "dev"]) == 0
    token = capsys.readouterr().out.strip()
    v = TokenVerifier.from_file(REPO / "configs/dev-keys/gateway-dev.pub.pem",
                                issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    assert v.verify(token, time.time()).subject == "dev"


@pytest.mark.parametrize(("args", "message"), [
    (["--allow", "not a subject"], "expected NATS subject patterns"),
    (["--ttl", "0"], "expected 1..86400"),
    (["--key", "missing.pem"], "No such file"),
])
def test_bad_arguments_say_what_was_expected(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["token", *args]) != 0
    assert message in capsys.readouterr().err
