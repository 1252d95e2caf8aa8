"""Log redaction by value type: secrets go wherever they hide, identities always stay."""

from __future__ import annotations

import io
import json
import secrets

import nkeys
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from xypipe._log import configure, get_logger
from xypipe._redact import redact, redact_text

JWT = ("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTl9."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmU")


def _seed() -> str:
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()


def _pem() -> str:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


@pytest.mark.parametrize(("text", "kind"), [
    (f"token refused: {JWT} (bad signature)", "jwt"),
    ("header was Authorization: Bearer 8f2kQ_zz9-Yh1bN0pLw3", "credentials"),
    (f"seed {_seed()} does not decode", "nkey-seed"),
    (f"key file holds\n{_pem()}", "pem-private-key"),
])
def test_a_secret_shaped_value_is_redacted_inside_any_text(text: str, kind: str) -> None:
    out = redact_text(text)
    assert f"[redacted:{kind} #" in out
    # What surrounds the secret is kept: the line still says what happened.
    assert text.startswith(out.split("[redacted", 1)[0])


def test_prose_about_auth_schemes_is_left_alone() -> None:
    text = "Basic authentication and Bearer tokenization are documented elsewhere"
    assert redact_text(text) == text


def test_the_same_secret_has_the_same_fingerprint_so_lines_can_be_correlated() -> None:
    assert redact_text(f"a {JWT}").split(" ", 1)[1] == redact_text(f"b {JWT}").split(" ", 1)[1]


def test_identity_fields_are_never_masked_but_secret_fields_always_are() -> None:
    fields = {"token_subject": "alice", "sub": "bob", "principal": "carol", "user": "dave",
              "token_id": "jti-42", "password": "hunter2", "db_password": "x" * 30,
              "seed": "short", "token": "opaque", "nested": {"client_secret": "s3cr3t"},
              "list": [JWT, "plain"], "count": 3, "missing_secret": None}
    out = {k: redact(v, k) for k, v in fields.items()}
    assert out["token_subject"] == "alice" and out["sub"] == "bob"
    assert out["principal"] == "carol" and out["user"] == "dave" and out["token_id"] == "jti-42"
    assert out["password"] == out["db_password"] == out["seed"] == out["token"] == "[redacted]"
    assert out["nested"] == {"client_secret": "[redacted]"}
    assert out["list"][0].startswith("[redacted:jwt #") and out["list"][1] == "plain"
    assert out["count"] == 3 and out["missing_secret"] is None


def test_a_json_log_line_carries_no_secret_and_no_masked_identity() -> None:
    buf = io.StringIO()
    configure("info", stream=buf)
    try:
        get_logger("t").warning(f"refresh refused for {JWT}", code="XY-AUTH-001",
                                token_subject="alice", presented_subject="mallory",
                                password="hunter2-but-longer")
    finally:
        configure("info")
    line = json.loads(buf.getvalue())
    assert JWT not in buf.getvalue() and "hunter2" not in buf.getvalue()
    assert line["token_subject"] == "alice" and line["presented_subject"] == "mallory"
    assert line["msg"].startswith("refresh refused for [redacted:jwt #")
