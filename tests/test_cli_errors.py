"""Expected failures of the real command line: one line on stderr, naming what failed and
ending with its code, the right exit status, and never a traceback."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from test_demo import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODE_AT_END = re.compile(r" \[XY-[A-Z]+-\d{3}\]$")


def closed_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"  # nothing listens there


BAD_CONFIG = """
[log]
format = "jsn"
[[pipelines.p.stages]]
use = "xypipe.testing:CountingSource"
[[pipelines.p.stages]]
use = "xypipe.testing:ListSink"
"""

# (argv, extra environment, exit status, how the one line starts, its code)
CASES = [
    pytest.param(["publish", "--url", closed_url(), "--count", "1"], {}, 1,
                 "xypipe publish: connect to nats://127.0.0.1:", "XY-NATS-005",
                 id="publish-nats-unreachable"),
    pytest.param(["tail", "--url", closed_url(), "--count", "1"], {}, 1,
                 "xypipe tail: connect to nats://127.0.0.1:", "XY-NATS-005",
                 id="tail-nats-unreachable"),
    pytest.param(["publish", "--replay", "missing.tape"], {}, 2,
                 "xypipe publish: pipelines.publisher.stages[0] (publisher).replay: expected "
                 "the path of an existing tape file", "XY-CFG-001", id="publish-missing-tape"),
    pytest.param(["run", "missing.toml"], {}, 2,
                 "missing.toml: cannot read the file: No such file or directory", "XY-CFG-001",
                 id="run-missing-config"),
    pytest.param(["check", "missing.toml"], {}, 1,
                 "missing.toml: cannot read the file", "XY-CFG-001", id="check-missing-config"),
    pytest.param(["run", "bad.toml"], {}, 2,
                 'bad.toml: log.format: expected one of "auto", "json", "console", got "jsn"; '
                 'did you mean "json"?', "XY-CFG-001", id="run-bad-config"),
    pytest.param(["token", "--key", "missing.pem"], {}, 1,
                 "xypipe token: private key file 'missing.pem': No such file or directory",
                 "XY-AUTH-001", id="token-missing-key"),
    pytest.param(["token", "--key", "bad.toml"], {}, 1,
                 "xypipe token: private key file 'bad.toml': not a PEM private key",
                 "XY-AUTH-001", id="token-bad-key"),
    pytest.param(["token", "--ttl", "0"], {}, 2,
                 "xypipe token: --ttl: expected 1..86400 seconds, got 0", "XY-CLI-110",
                 id="token-bad-ttl"),
    pytest.param(["token", "keygen", "."], {}, 1,
                 "xypipe token: keygen: gateway.key.pem exists; not overwriting it",
                 "XY-CLI-111", id="keygen-would-overwrite"),
    pytest.param(["token", "keygen", "bad.toml/keys"], {}, 1,
                 "xypipe token: bad.toml/keys: Not a directory", "XY-CLI-112",
                 id="keygen-into-a-file"),
    pytest.param(["creds", "show", "missing.creds"], {}, 1,
                 "xypipe creds: missing.creds: cannot read it", "XY-SEC-001",
                 id="creds-show-missing-file"),
    pytest.param(["creds", "rotate", "reader", "--dir", "."], {}, 1,
                 "xypipe creds: .: no trust chain here", "XY-SEC-001", id="creds-no-chain"),
    pytest.param(["creds", "init", ".", "--ttl", "-1"], {}, 2,
                 "xypipe creds: --ttl: expected a positive number of seconds", "XY-CLI-110",
                 id="creds-bad-ttl"),
    pytest.param(["dev", "proto"], {}, 2,
                 "xypipe dev: run it from a checkout of xypipe", "XY-CLI-110",
                 id="dev-proto-outside-a-checkout"),
    pytest.param(["stages"], {"XY_LOG_FORMAT": "jsn"}, 2,
                 "xypipe stages: $XY_LOG_FORMAT: expected one of 'auto', 'json', 'console', "
                 "got 'jsn'; did you mean 'json'?", "XY-LOG-001", id="bad-log-format-env"),
]


@pytest.mark.parametrize(("argv", "env", "status", "starts", "code"), CASES)
def test_an_expected_failure_is_one_line_with_its_code(tmp_path, argv, env, status, starts,
                                                       code):
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    (tmp_path / "gateway.key.pem").write_text("kept\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("XY_")}
    done = subprocess.run([sys.executable, "-m", "xypipe", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**environ, **env})
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(starts), lines[0]
    assert lines[0].endswith(f" [{code}]") and CODE_AT_END.search(lines[0])
    assert done.returncode == status
