"""No secret in any log line the suite produces: an NKey seed, a JWT, a PEM private key, or a
password from the test configs.

Two kinds of log lines are read:

- **in this process**: every log record, as it would be written — ``xypipe.*`` records through
  the JSON formatter (which redacts), any other logger's record as its plain text;
- **in every process the tests start**: ``$XYPIPE_LOG_DIR`` is set for the session, so every
  ``xypipe`` process (children of ``xypipe run`` included) also appends its JSON lines to
  ``xypipe-<pid>.jsonl`` there — whatever the test did with its stderr — and every ``*.log``
  file the tests wrote under the session's temporary directory is read at the end.

A test whose lines (or whose processes' lines) carry a secret fails at its teardown, naming
the line; lines written after a test ended are caught by the session's final sweep.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from xypipe._log import LOG_DIR_ENV, JsonFormatter

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: An NKey seed (user, account, operator), a JWT (three dot-separated base64url parts), a PEM
#: private key.
SECRET_SHAPES = re.compile(
    r"S[UAO][A-Z2-7]{56}|eyJ[\w-]+\.[\w-]+\.[\w-]+|-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Passwords as the tests and configs write them (``password = "…"``, ``password: "…"``).
_PASSWORD = re.compile(r"""password["']?\s*[:=]\s*["']([^"'\s\[\]]{6,})["']""")


def configured_passwords() -> frozenset[str]:
    """Every password the test sources and the shipped configs set."""
    found: set[str] = set()
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "configs").rglob("*.toml")]:
        found.update(_PASSWORD.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(found)


class SecretScan:
    """Finds secrets in log lines; remembers where each was found. ``log_dir`` is where the
    processes the tests start copy their lines."""

    def __init__(self, passwords: frozenset[str], log_dir: pathlib.Path) -> None:
        self.passwords = passwords
        self.log_dir = log_dir
        #: Where in-process records are attributed (the running test).
        self.where = "(between tests)"
        self._password = re.compile("|".join(map(re.escape, sorted(passwords)))) \
            if passwords else None
        self.leaks: list[str] = []
        self._offsets: dict[pathlib.Path, int] = {}

    def check(self, line: str, where: str) -> None:
        found = SECRET_SHAPES.search(line) or (
            self._password.search(line) if self._password is not None else None)
        if found is not None:
            self.leaks.append(f"{where}: {found.group(0)[:12]}… in {line[:300]!r}")

    def read_new(self, files: Iterator[pathlib.Path]) -> None:
        """The lines written to ``files`` since the last look."""
        for path in files:
            start = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            self._offsets[path] = start + len(data)
            for line in data.decode("utf-8", "replace").splitlines():
                self.check(line, str(path))


class _Capture(logging.Handler):
    """Every record of this process, checked as it would be written."""

    def __init__(self, scan: SecretScan) -> None:
        super().__init__(logging.DEBUG)
        self.scan = scan
        self.json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "xypipe" or record.name.startswith("xypipe."):
            line = self.json.format(record)
        else:
            line = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                line += f" {record.exc_info[1]}"
        self.scan.check(line, f"{self.scan.where}: log record {record.name}")


@pytest.fixture(scope="session", autouse=True)
def secret_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretScan]:
    """For the whole session: every log line checked; at the end, every log file swept."""
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="xypipe-test-logs-"))
    old = os.environ.get(LOG_DIR_ENV)
    os.environ[LOG_DIR_ENV] = str(log_dir)
    scan = SecretScan(configured_passwords(), log_dir)
    capture = _Capture(scan)
    loggers = [logging.getLogger(), logging.getLogger("xypipe")]
    for logger in loggers:
        logger.addHandler(capture)
    try:
        yield scan
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        if old is None:
            os.environ.pop(LOG_DIR_ENV, None)
        else:
            os.environ[LOG_DIR_ENV] = old
    # Lines written after their test ended, and the log files tests kept of their processes.
    before = len(scan.leaks)
    scan.read_new(log_dir.glob("*.jsonl"))
    scan.read_new(tmp_path_factory.getbasetemp().rglob("*.log"))
    late = scan.leaks[before:]
    if not scan.leaks:
        shutil.rmtree(log_dir, ignore_errors=True)
    assert not late, f"secrets in log lines (kept in {log_dir}):\n" + "\n".join(late)


@pytest.fixture(autouse=True)
def no_secret_in_any_log(secret_scan: SecretScan, request: pytest.FixtureRequest
                         ) -> Iterator[None]:
    """The lines of this test, and of every process it started, hold no secret."""
    secret_scan.read_new(secret_scan.log_dir.glob("*.jsonl"))  # not this test's
    before = len(secret_scan.leaks)
    secret_scan.where = request.node.nodeid
    try:
        yield
    finally:
        secret_scan.where = "(between tests)"
    secret_scan.read_new(secret_scan.log_dir.glob("*.jsonl"))
    leaks = secret_scan.leaks[before:]
    assert not leaks, "secrets in log lines:\n" + "\n".join(leaks)
