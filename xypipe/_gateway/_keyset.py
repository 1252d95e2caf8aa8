"""The public keys tokens are verified with, selected by the token header's ``kid``.

A gateway's (and ``flag_admin``'s) ``public_key`` names one of three sources:

* a PEM file: one key, the legacy shape. Its kid is the file name without ``.pub.pem`` /
  ``.pem``; since it is the only candidate, tokens with any ``kid`` or none are checked
  against it (a wrong key fails on the signature).
* a directory: every ``*.pem`` file in it is a public key whose kid is the file name without
  ``.pub.pem`` / ``.pem``; ``*.key.pem`` files (private halves ``xypipe token keygen`` writes
  beside them) are never read.
* a JWKS file (``*.json``, ``{"keys": [...]}``): each key's ``kid`` is required; parsed by pyjwt.

With a directory or a JWKS file the ``kid`` selects the key strictly: a token naming a kid that is
not loaded is refused (``unknown_kid``); a token without ``kid`` is checked only when exactly one
key is loaded. Loading is all or nothing: one unusable file refuses the whole set, naming the
file, so a reload never loses a key that was accepted before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from xypipe._errors import AuthError, AuthKeysBad
from xypipe._gateway._auth_keys import VerifyKey, algorithm_for_key

__all__ = ["KeySet", "fingerprint", "kid_of", "load_keyset"]

#: A key source's state as the watch compares it: (name, mtime_ns, size) of what it reads.
Fingerprint = tuple[tuple[str, int, int], ...]


@attrs.frozen
class KeySet:
    """Loaded keys by kid, and whether the kid selects strictly (directory, JWKS)."""

    keys: Mapping[str, VerifyKey]
    source: str
    strict: bool

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self.keys)

    def select(self, kid: str | None) -> tuple[str, VerifyKey] | None:
        """The (kid, key) a token with header ``kid`` is checked against; None = refused."""
        if not self.strict or kid is None:
            if len(self.keys) == 1:
                return next(iter(self.keys.items()))
            if kid is None:
                return None
        key = self.keys.get(kid)
        return None if key is None else (kid, key)


def kid_of(path: str | os.PathLike[str]) -> str:
    """A key file's kid: its name without ``.pub.pem``, ``.key.pem`` or ``.pem``."""
    name = Path(path).name
    for suffix in (".pub.pem", ".key.pem", ".pem"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name or "default"


def _key_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.name.endswith(".pem") and not p.name.endswith(".key.pem"))


def fingerprint(source: str | os.PathLike[str]) -> Fingerprint:
    """What a reload would read, cheaply: changes when a key file is added, removed or written."""
    path = Path(source)
    try:
        files = _key_files(path) if path.is_dir() else [path]
        out = []
        for p in files:
            st = p.stat()
            out.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(out)
    except OSError:
        # Missing or unreadable: a distinct state, so it is reloaded (and refused) when it changes.
        return (("", -1, -1),)


def _pem_key(path: Path) -> VerifyKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise AuthKeysBad(f"JWT public key file {os.fspath(path)!r}: {exc.strerror}") from exc
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise AuthKeysBad(f"JWT public key file {os.fspath(path)!r}: not a PEM public key "
                        f"({exc})") from exc
    try:
        algorithm_for_key(key)
    except AuthError as exc:
        raise AuthKeysBad(f"JWT public key file {os.fspath(path)!r}: {exc.message}") from exc
    assert isinstance(key, VerifyKey)  # algorithm_for_key refused every other kind
    return key


def _jwks(path: Path) -> dict[str, VerifyKey]:
    where = f"JWKS file {os.fspath(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthKeysBad(f"{where}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise AuthKeysBad(f"{where}: not UTF-8 text ({exc.reason})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthKeysBad(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    raw = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        raise AuthKeysBad(f"{where}: expected {{\"keys\": [...]}} with at least one key")
    keys: dict[str, VerifyKey] = {}
    for i, entry in enumerate(raw):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise AuthKeysBad(f"{where}: keys[{i}] has no \"kid\" (every key needs one)")
        if kid in keys:
            raise AuthKeysBad(f"{where}: keys[{i}]: kid {kid!r} appears twice")
        try:
            key = jwt.PyJWK.from_dict(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise AuthKeysBad(f"{where}: key {kid!r}: {exc}") from exc
        try:
            algorithm_for_key(key)
        except AuthError as exc:
            raise AuthKeysBad(f"{where}: key {kid!r}: {exc.message}") from exc
        assert isinstance(key, VerifyKey)
        keys[kid] = key
    return keys


def load_keyset(source: str | os.PathLike[str]) -> KeySet:
    """Every key of ``source`` (PEM file, directory, JWKS file), or an :class:`AuthError`
    naming the first unusable file; never a partial set."""
    path = Path(source)
    shown = os.fspath(path)
    if path.is_dir():
        keys: dict[str, VerifyKey] = {}
        try:
            files = _key_files(path)
        except OSError as exc:
            raise AuthKeysBad(f"JWT key directory {shown!r}: {exc.strerror}") from exc
        for p in files:
            keys[kid_of(p)] = _pem_key(p)
        if not keys:
            raise AuthKeysBad(f"JWT key directory {shown!r}: no public key (*.pem) in it")
        return KeySet(keys=keys, source=shown, strict=True)
    if path.suffix == ".json":
        return KeySet(keys=_jwks(path), source=shown, strict=True)
    return KeySet(keys={kid_of(path): _pem_key(path)}, source=shown, strict=False)
