"""``configs/cluster.toml`` and the ``[nats.embedded] cluster`` / ``[nats] replicas`` keys."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from xypipe._config import EmbeddedClusterConfig, EmbeddedNatsConfig, NatsConfig, load_config
from xypipe._errors import ConfigError
from xypipe._nats_cluster import cluster_nodes, node_doc

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_TOML = ROOT / "configs" / "cluster.toml"


def test_the_cluster_configs_bus_is_three_routed_nodes_keeping_three_copies(tmp_path: Path):
    # The [nats] tables of configs/cluster.toml, alone (the rest is checked below).
    text = CLUSTER_TOML.read_text()
    nats = text[text.index("[nats]"):text.index("[http]")]
    config = tmp_path / "bus.toml"
    config.write_text(nats + "\n[pipelines.p]\n[[pipelines.p.stages]]\n"
                      'use = "xypipe.testing:CountingSource"\n'
                      '[[pipelines.p.stages]]\nuse = "xypipe.testing:ListSink"\n')
    cfg = load_config(config)
    assert cfg.nats is not None
    assert cfg.nats.embedded.nodes == 3
    assert cfg.nats.stream_replicas == 3
    nodes = cluster_nodes(cfg.nats.embedded)
    assert [(n.name, n.port, n.route_port) for n in nodes] == [
        ("xypipe-0", 4222, 6222), ("xypipe-1", 4223, 6223), ("xypipe-2", 4224, 6224)]
    assert [n.store_dir for n in nodes] == [
        Path("var/nats-cluster") / f"node-{i}" for i in range(3)]
    doc = node_doc(nodes[1], nodes, "xypipe", "pw", {"authorization": {"users": []}})
    assert doc["server_name"] == "xypipe-1"
    cluster = doc["cluster"]
    assert isinstance(cluster, dict) and cluster["listen"] == "127.0.0.1:6223"
    assert cluster["routes"] == [f"nats://xypipe-route:pw@127.0.0.1:{p}"
                                 for p in (6222, 6223, 6224)]


def test_xypipe_check_accepts_the_cluster_config():
    done = subprocess.run([sys.executable, "-m", "xypipe", "check", str(CLUSTER_TOML)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    doc = tomllib.loads(CLUSTER_TOML.read_text())
    assert doc["processes"]["aggregator"]["workers"] == 2
    assert doc["processes"]["gateway"]["workers"] == 2


def test_replicas_default_to_the_embedded_nodes_and_one_elsewhere():
    cluster = EmbeddedNatsConfig(cluster=EmbeddedClusterConfig(nodes=3))
    assert NatsConfig().stream_replicas == 1
    assert NatsConfig(embedded=cluster).stream_replicas == 3
    assert NatsConfig(url="nats://a:4222,nats://b:4222").stream_replicas == 1
    assert NatsConfig(url="nats://a:4222,nats://b:4222", replicas=3).stream_replicas == 3
    assert NatsConfig(embedded=cluster, replicas=1).stream_replicas == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("[nats]\nreplicas = 3\n",
     "nats.replicas: expected at most the embedded bus's 1 node(s)"),
    ("[nats]\nreplicas = 0\n", "nats.replicas: expected an integer 1..5, got 0"),
    ("[nats.embedded]\nport = 6222\ncluster = { nodes = 3, route_port = 6223 }\n",
     "nats.embedded.cluster.route_port: expected route ports apart from the client ports "
     "6222..6224, got 6223"),
    ("[nats.embedded]\ncluster = { nodes = 3, name = \"a b\" }\n",
     "nats.embedded.cluster.name: expected letters, digits, - or _"),
    ("[nats.embedded]\ncluster = { nodes = 0 }\n",
     "nats.embedded.cluster.nodes: expected an integer 1..9, got 0"),
])
def test_a_wrong_cluster_setting_names_its_key(tmp_path: Path, text: str, expected: str):
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n[pipelines.p]\n[[pipelines.p.stages]]\n"
                      'use = "xypipe.testing:CountingSource"\n'
                      '[[pipelines.p.stages]]\nuse = "xypipe.testing:ListSink"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert expected in str(info.value)
