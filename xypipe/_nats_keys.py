"""The embedded bus's credentials on disk: one NKey per role, kept with the server's data.

At the first start of the embedded server every role of :data:`xypipe._nats_roles.ROLES` gets an
NKey user (a fresh 32-byte seed from :mod:`secrets`, encoded by the ``nkeys`` library); later
starts reuse them, so clients and restarts keep working and the seeds are never re-issued::

    <data_dir>/auth/            (0700)
        aggregator.nk           (0600) the role's seed: what a client of that role signs with
        gateway.nk ...
        nats-server.conf        (0600) users (public keys only) and their permissions

The server configuration holds public keys only and is written again at every start from the
kept keys and the current permissions (so a new version's permissions apply at once); the seeds
never leave their files — nats-py reads a seed file and signs the server's nonce with it.

A seed file that is readable by others is tightened to 0600 (logged ``XY-NATS-021``); one that
does not hold a user seed is an error naming the file (``XY-NATS-020``): it is never silently
replaced, since every client configured with it would be locked out.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import nkeys

from xypipe._errors import NATS_KEY_MODE_TIGHTENED, NatsKeyError
from xypipe._log import get_logger
from xypipe._nats_roles import ROLES, BusLayout, server_config

__all__ = ["AUTH_DIR", "BusKeys", "seed_file_of", "write_private"]

_log = get_logger("nats.keys")

AUTH_DIR = "auth"
CONFIG_NAME = "nats-server.conf"


def seed_file_of(data_dir: str | os.PathLike[str], role: str) -> Path:
    """Where the seed of ``role`` is kept for an embedded server with ``data_dir``."""
    return Path(data_dir) / AUTH_DIR / f"{role}.nk"


def write_private(path: Path, data: bytes, *, exclusive: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class BusKeys:
    """The role keys of one embedded server. Create with :meth:`load_or_create`."""

    def __init__(self, directory: Path, public: dict[str, str]) -> None:
        self.directory = directory
        self.public = public

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> BusKeys:
        directory = Path(data_dir) / AUTH_DIR
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        public: dict[str, str] = {}
        for role in ROLES:
            path = seed_file_of(data_dir, role)
            if not path.exists():
                seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
                try:
                    write_private(path, seed + b"\n", exclusive=True)
                except FileExistsError:
                    pass  # another start made it meanwhile: read theirs
                else:
                    _log.info("generated the NATS key of a role", role=role, file=str(path))
            public[role] = cls._public_of(path)
        return cls(directory, public)

    @staticmethod
    def _public_of(path: Path) -> str:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            _log.warning("a NATS seed file was readable by others; tightened to 0600",
                         code=NATS_KEY_MODE_TIGHTENED, file=str(path), mode=oct(mode))
        text = path.read_bytes().strip()
        try:
            prefix, _ = nkeys.decode_seed(text)
            pair = nkeys.from_seed(bytearray(text)) if prefix == nkeys.PREFIX_BYTE_USER else None
        except (nkeys.NkeysError, ValueError):
            pair = None
        if pair is None:
            raise NatsKeyError(
                f"{path}: expected a NATS user seed (one line starting with SU, as generated "
                "at the embedded server's first start), got something else; move the file away "
                "to generate a new key (clients must then use the new one)")
        return bytes(pair.public_key).decode()

    def seed_file(self, role: str) -> Path:
        return self.directory / f"{role}.nk"

    def write_server_config(self, layout: BusLayout) -> Path:
        """Write (atomically) the server's users and permissions; its path."""
        path = self.directory / CONFIG_NAME
        tmp = path.with_suffix(".tmp")
        write_private(tmp, server_config(self.public, layout).encode(), exclusive=False)
        os.replace(tmp, path)
        return path
