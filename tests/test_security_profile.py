"""``[security] profile = "prod"``: ``xypipe check`` and ``xypipe run`` refuse what production
must not have — each finding one line with its own code — and pass a config that has none."""

from __future__ import annotations

import copy
import json
import pathlib
import tomllib

import pytest

from xypipe._cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: A production tree that passes: TLS and a chain (a .creds file and a client certificate
#: per process), exact origins, the identity provider's key, no token minting.
PROD: dict[str, object] = {
    "security": {"profile": "prod"},
    "nats": {"url": "tls://nats.internal:4222", "chain": "secrets/nats"},
    "processes": {"gateway": {"http": {"port": 18080}}, "admin": {"http": {"port": 18092}}},
    "pipelines": {
        "gateway": {"process": "gateway", "stages": [
            {"use": "nats_source", "subjects": ["xy.md.>"]},
            {"use": "gateway", "public_key": "secrets/jwt-public.pem",
             "allowed_origins": ["https://md.example.com"]}]},
        "admin": {"process": "admin", "stages": [
            {"use": "flag_admin", "public_key": "secrets/jwt-public.pem"}]},
    },
}


def _set(doc: dict[str, object], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node: object = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})  # type: ignore[union-attr]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        assert isinstance(node, dict)
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value


FINDINGS = [
    pytest.param({"nats.url": "embedded", "nats.chain": None},
                 ['nats.url: XY-SEC-030 prod profile: expected a NATS of your own over TLS '
                  '(url = "tls://…"), got "embedded" (the embedded bus has no TLS)'],
                 id="embedded-bus"),
    pytest.param({"nats.url": "nats://nats.internal:4222", "nats.chain": None,
                  "nats.creds": "secrets/x.creds"},
                 ['nats.url: XY-SEC-030 prod profile: expected TLS to NATS (tls:// URLs, a '
                  '[nats.tls] table or a chain), got "nats://nats.internal:4222" without one',
                  "processes.admin.nats.tls: XY-SEC-031 prod profile: expected a client "
                  "certificate for process 'admin' (mutual TLS: a chain, or tls.cert and "
                  "tls.key), got none",
                  "processes.gateway.nats.tls: XY-SEC-031 prod profile: expected a client "
                  "certificate for process 'gateway' (mutual TLS: a chain, or tls.cert and "
                  "tls.key), got none"],
                 id="plaintext-nats"),
    pytest.param({"processes.gateway.nats": {"nkey": "secrets/gateway.nk"}},
                 ["processes.gateway.nats.tls: XY-SEC-031 prod profile: expected a client "
                  "certificate for process 'gateway' (mutual TLS: a chain, or tls.cert and "
                  "tls.key), got none",
                  "processes.gateway.nats: XY-SEC-032 prod profile: expected a .creds file for "
                  "process 'gateway' (chain or creds: a user JWT of role 'gateway'), got "
                  "sign-in by nkey"],
                 id="no-creds"),
    pytest.param({"pipelines.gateway.stages.1.allowed_origins": ["*"]},
                 ['pipelines.gateway.stages[1] (gateway).allowed_origins: XY-SEC-033 prod '
                  'profile: expected the exact origins of the UI, got ["*"]'],
                 id="any-origin"),
    pytest.param({"pipelines.admin.stages.0.public_key": "configs/dev-keys/gateway-dev.pub.pem"},
                 ['pipelines.admin.stages[0] (flag_admin).public_key: XY-SEC-034 prod profile: '
                  "expected the identity provider's public key, got "
                  '"configs/dev-keys/gateway-dev.pub.pem" (a development key: its private half '
                  "is committed)"],
                 id="dev-token-key"),
    pytest.param({"pipelines.ui": {"stages": [
                    {"use": "ui_server", "token_private_key": "secrets/k.pem"}]}},
                 ['pipelines.ui.stages[0] (ui_server).token_private_key: XY-SEC-035 prod '
                  'profile: expected no token minting (tokens come from the identity provider),'
                  ' got "secrets/k.pem"'],
                 id="dev-token-minting"),
    pytest.param({"processes.admin.nats_role": "superuser"},
                 ["processes.admin.nats_role: XY-SEC-036 prod profile: expected a "
                  "least-privilege role for process 'admin', got \"superuser\""],
                 id="superuser"),
]


def _toml(value: object) -> str:
    """``value`` as a TOML value: tables inline (so a whole document is one line per key)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _write(tmp_path: pathlib.Path, doc: dict[str, object]) -> pathlib.Path:
    path = tmp_path / "prod.toml"
    path.write_text("".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in doc.items()))
    return path


def test_a_config_with_nothing_relaxed_passes(tmp_path: pathlib.Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(_write(tmp_path, PROD)), str(ROOT / "configs" / "prod.toml")]) == 0
    assert capsys.readouterr().err == ""


def _coded(finding: str) -> str:
    """A finding as the CLI prints it: its code moves to the end of the line (``[XY-…]``)."""
    key, rest = finding.split(": ", 1)
    code, rest = rest.split(" ", 1)
    return f"{key}: {rest} [{code}]"


@pytest.mark.parametrize(("changes", "expected"), FINDINGS)
def test_each_relaxation_is_refused_with_its_own_code(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
    changes: dict[str, object], expected: list[str],
) -> None:
    doc = copy.deepcopy(PROD)
    for key, value in changes.items():
        _set(doc, key, value)
    path = _write(tmp_path, doc)
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{path}: {_coded(line)}" for line in expected]
    # `xypipe run` refuses it the same way, before anything starts (a bad config: status 2).
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert all(_coded(line) in err for line in expected), err
    # Without the prod profile the same config is the user's business.
    doc["security"] = {"profile": "dev"}
    assert main(["check", str(_write(tmp_path, doc))]) == 0


def test_the_demo_relaxes_exactly_what_the_docs_say(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tomllib.loads((ROOT / "configs" / "demo.toml").read_text())
    doc["security"] = {"profile": "prod"}
    assert main(["check", str(_write(tmp_path, doc))]) == 1
    codes = [line.rsplit("[", 1)[1].rstrip("]") for line in capsys.readouterr().err.splitlines()]
    assert codes == ["XY-SEC-030", "XY-SEC-033", "XY-SEC-034", "XY-SEC-034", "XY-SEC-035"]
