"""Who may do what on the embedded NATS bus: per-role users with least-privilege permissions.

``nats.url = "embedded"`` runs its own nats-server; with ``[nats.embedded] auth = "roles"`` (the
default) that server admits only the users of :data:`ROLES`, each an NKey (the seeds live with
the data: :mod:`xypipe._nats_keys`), each with the subjects its job needs and nothing else — so
only the aggregator can publish ``xy.md.*``, and a stray or hostile publisher on the machine can
neither connect nor forge market data.

Every process of ``xypipe run`` connects as one role: ``[processes.NAME] nats_role`` when set,
else the one its stages name (``Stage.nats_role``: ingest/snapshot/publish → ``aggregator``,
gateway → ``gateway``, publisher → ``publisher``; stages without NATS name none); a process none
of whose stages needs more gets ``basic`` (health only). Stages that need two roles in one
process are a config error that names them (one connection is one user).

Each role's replies come to its own inbox prefix (``_INBOX.<role>.``), which only that role may
subscribe to: one role cannot read another's JetStream answers (a snapshot direct get, a KV
value) or answer them in its place.

This module is pure: it computes permissions and the server's configuration text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import attrs

__all__ = [
    "ROLES",
    "BusLayout",
    "Permissions",
    "RolePlan",
    "inbox_prefix",
    "permissions",
    "process_role",
    "role_conflicts",
    "server_config",
]

#: The roles a process (or a command line tool) can connect as.
ROLES = ("aggregator", "gateway", "publisher", "reader", "basic", "admin")

HEALTH_SUBJECT = "xy.exec.health"


@attrs.frozen
class Permissions:
    """Subjects a user may publish to and subscribe to (NATS wildcards)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def to_server(self) -> dict[str, dict[str, list[str]]]:
        return {"publish": {"allow": list(self.publish)},
                "subscribe": {"allow": list(self.subscribe)}}


@attrs.frozen
class BusLayout:
    """The JetStream streams and buckets the roles work on (``xypipe._bus_layout.bus_layout``
    reads them from the config's stages)."""

    source_streams: tuple[str, ...] = ("XY_SRC",)
    state_streams: tuple[str, ...] = ("XY_MD_SNAPSHOT", "XY_AGG_SEQ")
    #: Streams gateways read by direct get: snapshots and the aggregator's checkpoints.
    snapshot_streams: tuple[str, ...] = ("XY_MD_SNAPSHOT", "XY_AGG_SEQ")
    flag_buckets: tuple[str, ...] = ("xy_feature_flags",)
    #: Subjects gateways ask the aggregator for a fresh snapshot on.
    snapshot_requests: tuple[str, ...] = ("xy.agg.snapshot.request",)
    #: Known-groups buckets: written by the aggregator, read by gateways.
    group_buckets: tuple[str, ...] = ("xy_md_groups",)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


# What the role decisions read of a loaded configuration (``xypipe._config.AppConfig`` has it):
# described here rather than imported, so this pure module depends on nothing of xypipe's.


class _StageDecl(Protocol):
    @property
    def where(self) -> str: ...

    @property
    def stage_cls(self) -> type[object]: ...


class _Pipeline(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def process(self) -> str: ...

    @property
    def stages(self) -> Sequence[_StageDecl]: ...


class RolePlan(Protocol):
    """The processes of a configuration, their pipelines and the roles they declare."""

    @property
    def pipelines(self) -> Mapping[str, _Pipeline]: ...

    def process_names(self) -> list[str]: ...

    def declared_nats_role(self, process: str) -> str | None: ...


def inbox_prefix(role: str) -> str:
    """Where a role's request replies arrive; only that role may subscribe below it."""
    return f"_INBOX.{role}"


def _manage(stream: str) -> list[str]:
    """Create (idempotently: create, else update) and inspect a stream."""
    return [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.INFO.{stream}"]


def _consume(stream: str) -> list[str]:
    """Ephemeral consumers on a stream: create, inspect, pull, delete, acknowledge."""
    return [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>", f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>", f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>"]


def _read(stream: str) -> list[str]:
    """Direct gets (any replica, no consumer) of a stream's messages."""
    return [f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}"]


def permissions(role: str, layout: BusLayout) -> Permissions:
    """What ``role`` may do on a bus laid out as ``layout``."""
    if role not in ROLES:
        raise ValueError(f"unknown NATS role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "admin":
        return Permissions(publish=(">",), subscribe=(">",))
    # Every process answers health requests and publishes its reports; replies to requests
    # go to the requester's inbox (unguessable, below its own role's prefix).
    pub = [f"{HEALTH_SUBJECT}.>", "_INBOX.>"]
    sub = [HEALTH_SUBJECT, f"{inbox_prefix(role)}.>"]
    if role == "aggregator":
        pub += ["xy.md.>", "xy.agg.>"]
        sub += ["xy.agg.>"]
        for s in layout.source_streams:
            pub += _manage(s) + _consume(s)
        for s in layout.state_streams:
            pub += _manage(s) + _consume(s) + _read(s)
        for b in layout.group_buckets:
            kv = f"KV_{b}"
            pub += _manage(kv) + _consume(kv) + _read(kv) + [f"$KV.{b}.>"]
    elif role == "gateway":
        sub += ["xy.md.>"]
        pub += list(layout.snapshot_requests)
        for s in layout.snapshot_streams:
            pub += [f"$JS.API.STREAM.INFO.{s}", *_read(s)]
        for b in layout.flag_buckets:
            kv = f"KV_{b}"
            pub += _manage(kv) + _consume(kv) + _read(kv) + [f"$KV.{b}.>"]
        for b in layout.group_buckets:
            # Read-only: the aggregator owns the list of the groups it publishes.
            kv = f"KV_{b}"
            pub += [f"$JS.API.STREAM.INFO.{kv}", *_consume(kv), *_read(kv)]
    elif role == "publisher":
        pub += ["xy.src.>", "xy.ref.>"]
        for s in layout.source_streams:
            pub += _manage(s)
    elif role == "reader":
        # Reads everything xypipe publishes, and asks every instance for its health.
        pub += [HEALTH_SUBJECT]
        sub += ["xy.md.>", "xy.src.>", "xy.ref.>", "xy.agg.>", "xy.exec.>"]
    return Permissions(publish=_unique(pub), subscribe=_unique(sub))


def server_config(users: dict[str, str], layout: BusLayout) -> str:
    """nats-server configuration admitting exactly ``users`` (role → NKey public key).

    JSON is valid nats-server configuration syntax, and a generator that cannot mis-quote.
    """
    doc = {"authorization": {"users": [
        {"nkey": public, "permissions": permissions(role, layout).to_server()}
        for role, public in sorted(users.items())
    ]}}
    return "# Generated by xypipe at every start of the embedded server; do not edit.\n" + \
        json.dumps(doc, indent=2) + "\n"


def _stage_roles(cfg: RolePlan, process: str) -> dict[str, list[str]]:
    """Role → the stages (``pipeline.stages[i] (name)``) of ``process`` that need it."""
    out: dict[str, list[str]] = {}
    for pipe in cfg.pipelines.values():
        if pipe.process != process:
            continue
        for decl in pipe.stages:
            role = getattr(decl.stage_cls, "nats_role", None)
            if role is not None:
                out.setdefault(str(role), []).append(f"pipelines.{pipe.name}.{decl.where}")
    return out


def role_conflicts(cfg: RolePlan) -> list[str]:
    """Config problems: processes whose stages need more than one role and name none."""
    problems = []
    for process in cfg.process_names():
        if cfg.declared_nats_role(process) is not None:
            continue
        roles = _stage_roles(cfg, process)
        if len(roles) > 1:
            needs = "; ".join(f"{r} ({', '.join(where)})" for r, where in sorted(roles.items()))
            key = "nats.role" if process == "main" else f"processes.{process}.nats_role"
            problems.append(
                f"{key}: the stages of process {process!r} need different NATS roles — "
                f"{needs} — and one process connects as one user; run them in separate "
                f'[processes] or set nats_role (e.g. "admin", which is not least privilege)')
    return problems


def process_role(cfg: RolePlan, process: str) -> str:
    """The role ``process`` connects as on the embedded bus (see the module docstring)."""
    declared = cfg.declared_nats_role(process)
    if declared is not None:
        return declared
    roles = _stage_roles(cfg, process)
    if len(roles) > 1:
        raise ValueError("; ".join(role_conflicts(cfg)))
    return next(iter(roles), "basic")
