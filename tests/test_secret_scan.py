"""The suite's secret scan (tests/_secret_scan.py) finds what it is for, and sees the lines of
processes whose stderr a test threw away."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import nkeys
import pytest
from _secret_scan import SecretScan, configured_passwords

from xypipe._creds import KeyKind, NKey
from xypipe._gateway._tokens import generate_ed25519_keypair, load_private_key, mint
from xypipe._log import LOG_DIR_ENV

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _secrets(tmp_path: pathlib.Path) -> dict[str, str]:
    private, _ = generate_ed25519_keypair()
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(private)
    token = mint(load_private_key(key_file), subject="alice", allow=["xy.md.>"], now=0)
    return {
        "user seed": NKey.generate(KeyKind.USER).seed.decode(),
        "account seed": NKey.generate(KeyKind.ACCOUNT).seed.decode(),
        "operator seed": nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_OPERATOR).decode(),
        "jwt": token,
        "pem": private.decode(),
        "password": "adapter-secret",  # tests/test_nats_permissions.py's server config
    }


def test_every_kind_of_secret_is_found_and_redacted_forms_are_not(
    tmp_path: pathlib.Path,
) -> None:
    scan = SecretScan(configured_passwords(), tmp_path)
    for kind, secret in _secrets(tmp_path).items():
        before = len(scan.leaks)
        scan.check(f'{{"msg":"connect","detail":"{secret[:400]}"}}', kind)
        assert len(scan.leaks) == before + 1, kind
    clean = ['{"msg":"token refused","token":"[redacted:jwt #1a2b3c4d]","sub":"alice"}',
             '{"user":"UAM5KXMDHUVJBACXUNZF4G77UXKEMOKOQX23ICDCGC4WP52CUYYX75GZ"}',
             '{"password":"[redacted]","file":"/chain/creds/gateway.creds"}']
    before = len(scan.leaks)
    for line in clean:
        scan.check(line, "clean")
    assert len(scan.leaks) == before


def test_the_test_configs_passwords_are_known() -> None:
    assert {"adapter-secret", "gateway-secret"} <= configured_passwords()


def test_a_process_whose_stderr_is_thrown_away_still_copies_its_lines(
    tmp_path: pathlib.Path,
) -> None:
    script = ("from xypipe import _log; _log.configure('info'); "
              "_log.get_logger('probe').info('hello from a child', n=1)")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, LOG_DIR_ENV: str(tmp_path)})
    [copy] = tmp_path.glob("xypipe-*.jsonl")
    assert '"msg":"hello from a child"' in copy.read_text()
    # The session's scan reads that directory: the variable is set for every test.
    assert os.environ.get(LOG_DIR_ENV)


@pytest.mark.parametrize("shape", ["eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
                                   "-----BEGIN EC PRIVATE KEY-----"])
def test_new_lines_of_a_copied_file_are_read_once(tmp_path: pathlib.Path, shape: str) -> None:
    scan = SecretScan(frozenset(), tmp_path)
    log = tmp_path / "xypipe-1.jsonl"
    log.write_text('{"msg":"fine"}\n')
    scan.read_new(tmp_path.glob("*.jsonl"))
    assert scan.leaks == []
    with log.open("a") as f:
        f.write(f'{{"msg":"{shape}"}}\n')
    scan.read_new(tmp_path.glob("*.jsonl"))
    scan.read_new(tmp_path.glob("*.jsonl"))
    assert len(scan.leaks) == 1
