"""The embedded bus as a JetStream cluster: where each node listens and what it is told.

``[nats.embedded] cluster = { nodes = 3 }`` runs three nats-servers instead of one, on the
same host, each with its own JetStream store, all routed to each other. This module lays the
nodes out (:func:`cluster_nodes`) and writes each node's configuration (:func:`write_node_configs`);
:mod:`xypipe._embedded` starts and supervises them.

Every node gets the same users and permissions (the role NKeys of :mod:`xypipe._nats_keys`), so
a client signs in to whichever node it reaches. Routes are authenticated too: a process on the
machine that dialled a route port unauthenticated would see every message of every user, so the
nodes share a route password generated at the first start and kept beside the role keys
(``DATA_DIR/auth/route.secret``, 0600). Each node's configuration holds it and is written 0600
in the same directory; it never appears in argv.

Layout, node ``i`` of ``n``::

    server_name   <cluster name>-<i>         (stable: JetStream knows its peers by name)
    client port   port + i                   (every node picks a free one when port = 0)
    route port    route_port + i             (fixed: each node is told all its peers at start)
    store         DATA_DIR/node-<i>/jetstream
"""

from __future__ import annotations

import secrets
from pathlib import Path

import attrs

from xypipe._config import EmbeddedNatsConfig
from xypipe._nats_keys import AUTH_DIR, write_private
from xypipe._nats_roles import config_text

__all__ = ["ROUTE_SECRET", "ROUTE_USER", "ClusterNode", "cluster_nodes", "route_secret",
           "write_node_configs"]

ROUTE_USER = "xypipe-route"
ROUTE_SECRET = "route.secret"


@attrs.frozen
class ClusterNode:
    """One server of the embedded cluster."""

    index: int
    name: str
    host: str
    #: Client port; 0 = a free one, read from the server's log at its first start.
    port: int
    route_port: int
    store_dir: Path

    @property
    def route_address(self) -> str:
        return f"{self.host}:{self.route_port}"


def cluster_nodes(cfg: EmbeddedNatsConfig) -> tuple[ClusterNode, ...]:
    """The nodes ``cfg.cluster`` asks for (one, on ``cfg.port``, without a cluster)."""
    data = Path(cfg.data_dir)
    if cfg.cluster is None:
        return (ClusterNode(0, "", cfg.host, cfg.port, 0, data),)
    c = cfg.cluster
    return tuple(
        ClusterNode(i, f"{c.name}-{i}", cfg.host, cfg.port + i if cfg.port else 0,
                    c.route_port + i, data / f"node-{i}")
        for i in range(c.nodes))


def route_secret(data_dir: str | Path) -> str:
    """The password nodes authenticate routes with: made once, then read back."""
    path = Path(data_dir) / AUTH_DIR / ROUTE_SECRET
    if not path.exists():
        try:
            write_private(path, secrets.token_urlsafe(32).encode() + b"\n", exclusive=True)
        except FileExistsError:
            pass  # another start made it meanwhile: use theirs
    return path.read_text().strip()


def node_doc(node: ClusterNode, nodes: tuple[ClusterNode, ...], cluster: str, secret: str,
             base: dict[str, object]) -> dict[str, object]:
    """``base`` (the users) plus this node's name and cluster block (routes to every node;
    its own is ignored by the server, which keeps all configurations alike)."""
    return {
        **base,
        "server_name": node.name,
        "cluster": {
            "name": cluster,
            "listen": node.route_address,
            "authorization": {"user": ROUTE_USER, "password": secret},
            "routes": [f"nats://{ROUTE_USER}:{secret}@{n.route_address}" for n in nodes],
        },
    }


def write_node_configs(cfg: EmbeddedNatsConfig, nodes: tuple[ClusterNode, ...],
                       base: dict[str, object]) -> list[Path]:
    """Write (atomically, 0600) each node's configuration; their paths, by node."""
    assert cfg.cluster is not None
    directory = Path(cfg.data_dir) / AUTH_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = route_secret(cfg.data_dir)
    paths: list[Path] = []
    for node in nodes:
        path = directory / f"node-{node.index}.conf"
        tmp = path.with_suffix(".tmp")
        text = config_text(node_doc(node, nodes, cfg.cluster.name, secret, base))
        write_private(tmp, text.encode(), exclusive=False)
        tmp.replace(path)
        paths.append(path)
    return paths
