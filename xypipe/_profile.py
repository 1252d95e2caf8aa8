"""What production requires of a config: ``[security] profile = "prod"``.

The demo relaxes what a desk's security review checks first (docs/security.md, "What the demo
relaxes"). Under the ``prod`` profile ``xypipe check`` and ``xypipe run`` refuse a config that
still does, one line per finding, each with its own code:

==============  =============================================================================
``XY-SEC-030``  NATS without TLS (a ``nats://`` URL with no ``[nats.tls]`` or chain; the
                embedded bus)
``XY-SEC-031``  a process that presents no client certificate to NATS (mutual TLS)
``XY-SEC-032``  a process that signs in without a ``.creds`` file (a user JWT of its role)
``XY-SEC-033``  a gateway that lets any Origin in (``allowed_origins = ["*"]``)
``XY-SEC-034``  no real key to verify browser tokens with (the committed development key)
``XY-SEC-035``  a ``ui_server`` that mints development tokens
``XY-SEC-036``  a process signed in as ``superuser``
==============  =============================================================================

Only the config is read — never the files it names, which a deployment mounts where it runs
(``xypipe check`` runs in CI too); a process checks its files when it starts
(:meth:`xypipe._nats_signin.SignIn.check`).
"""

from __future__ import annotations

from pathlib import PurePath

from xypipe._config import AppConfig
from xypipe._errors import (
    PROD_ANY_ORIGIN,
    PROD_DEV_TOKENS,
    PROD_NO_CLIENT_CERT,
    PROD_NO_CREDS,
    PROD_NO_TOKEN_KEY,
    PROD_PLAINTEXT_NATS,
    PROD_SUPERUSER,
    SecurityProfileError,
)
from xypipe._gateway._options import FlagAdminOptions, GatewayOptions
from xypipe._nats_signin import sign_in
from xypipe._stages.ui_server import UiServerConfig
from xypipe._validate import show

__all__ = ["DEV_KEY_DIR", "check_profile", "prod_problems"]

#: Where the repository keeps its development keys (their private halves are committed).
DEV_KEY_DIR = "dev-keys"


def _own_table(cfg: AppConfig, process: str) -> str:
    return "nats" if process == "main" else f"processes.{process}.nats"


def _nats_problems(cfg: AppConfig) -> list[tuple[str, str]]:
    nats = cfg.nats
    if nats is None:
        return []
    if nats.url == "embedded":
        return [("nats.url: prod profile: expected a NATS of your own over TLS "
                 '(url = "tls://…"), got "embedded" (the embedded bus has no TLS)',
                 PROD_PLAINTEXT_NATS)]
    out: list[tuple[str, str]] = []
    for process in cfg.process_names():
        signin = sign_in(cfg, process)
        own = _own_table(cfg, process)
        if not signin.tls:
            line = ("nats.url: prod profile: expected TLS to NATS (tls:// URLs, a [nats.tls] "
                    f"table or a chain), got {show(nats.url)} without one", PROD_PLAINTEXT_NATS)
            if line not in out:
                out.append(line)
        if signin.cert is None:
            out.append((f"{own}.tls: prod profile: expected a client certificate for process "
                        f"{process!r} (mutual TLS: a chain, or tls.cert and tls.key), got none",
                        PROD_NO_CLIENT_CERT))
        if signin.creds is None:
            out.append((f"{own}: prod profile: expected a .creds file for process {process!r} "
                        f"(chain or creds: a user JWT of role {signin.role!r}), got sign-in by "
                        f"{signin.method}", PROD_NO_CREDS))
        if signin.role == "superuser":
            key = "nats.role" if process == "main" else f"processes.{process}.nats_role"
            out.append((f"{key}: prod profile: expected a least-privilege role for process "
                        f'{process!r}, got "superuser"', PROD_SUPERUSER))
    return out


def _dev_key(path: str) -> bool:
    return not path or DEV_KEY_DIR in PurePath(path).parts


def _stage_problems(cfg: AppConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for pipe in cfg.pipelines.values():
        for decl in pipe.stages:
            where = f"pipelines.{pipe.name}.{decl.where}"
            c = decl.config
            if isinstance(c, GatewayOptions) and "*" in c.allowed_origins:
                out.append((f"{where}.allowed_origins: prod profile: expected the exact "
                            f"origins of the UI, got {show(c.allowed_origins)}", PROD_ANY_ORIGIN))
            if isinstance(c, GatewayOptions | FlagAdminOptions) and _dev_key(c.public_key):
                out.append((f"{where}.public_key: prod profile: expected the identity "
                            f"provider's public key, got {show(c.public_key)} (a development "
                            "key: its private half is committed)", PROD_NO_TOKEN_KEY))
            if isinstance(c, UiServerConfig) and c.token_private_key is not None:
                out.append((f"{where}.token_private_key: prod profile: expected no token "
                            "minting (tokens come from the identity provider), got "
                            f"{show(c.token_private_key)}", PROD_DEV_TOKENS))
    return out


def prod_problems(cfg: AppConfig) -> list[tuple[str, str]]:
    """What ``cfg`` relaxes that production requires: one (line, code) per finding (whatever
    its profile says)."""
    return _nats_problems(cfg) + _stage_problems(cfg)


def check_profile(cfg: AppConfig) -> None:
    """Under ``[security] profile = "prod"``, raise :class:`SecurityProfileError` with every
    finding of :func:`prod_problems`; other profiles pass."""
    if cfg.security.profile != "prod":
        return
    problems = prod_problems(cfg)
    if problems:
        raise SecurityProfileError([f"{cfg.path}: {line}" for line, _ in problems],
                                   codes=[code for _, code in problems])
