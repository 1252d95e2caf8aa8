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

What each role may do is written once, in :data:`xypipe._role_grants.GRANTS` (shared with the
operator-mode trust chain of :mod:`xypipe._creds`); this module lays it over the configured
streams and writes the embedded server's configuration text. It is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from xypipe._role_grants import ROLES, Permissions, inbox_prefix, permissions

if TYPE_CHECKING:
    from xypipe._config import AppConfig

__all__ = [
    "ROLES",
    "BusLayout",
    "Permissions",
    "inbox_prefix",
    "permissions",
    "process_role",
    "role_conflicts",
    "server_config",
]


@attrs.frozen
class BusLayout:
    """The JetStream streams and buckets the roles work on (from the config's stages)."""

    source_streams: tuple[str, ...] = ("XY_SRC",)
    state_streams: tuple[str, ...] = ("XY_MD_SNAPSHOT", "XY_AGG_SEQ")
    #: Streams gateways read by direct get: snapshots and the aggregator's checkpoints.
    snapshot_streams: tuple[str, ...] = ("XY_MD_SNAPSHOT", "XY_AGG_SEQ")
    flag_buckets: tuple[str, ...] = ("xy_feature_flags",)
    #: Subjects gateways ask the aggregator for a fresh snapshot on.
    snapshot_requests: tuple[str, ...] = ("xy.agg.snapshot.request",)
    #: Known-groups buckets: written by the aggregator, read by gateways.
    group_buckets: tuple[str, ...] = ("xy_md_groups",)

    @classmethod
    def of(cls, cfg: AppConfig) -> BusLayout:
        """The streams the configured stages use (defaults where no stage names one)."""
        from xypipe._gateway._options import GatewayOptions
        from xypipe._stages.ingest import IngestConfig
        from xypipe._stages.publish import PublishConfig

        default = cls()
        source: list[str] = []
        state: list[str] = []
        snapshots: list[str] = []
        buckets: list[str] = []
        groups: list[str] = []
        requests: list[str] = []
        for pipe in cfg.pipelines.values():
            for decl in pipe.stages:
                c = decl.config
                if isinstance(c, IngestConfig):
                    source.append(c.stream)
                    state += [c.state.snapshot_stream, c.state.checkpoint_stream]
                elif isinstance(c, PublishConfig):
                    state += [c.state.snapshot_stream, c.state.checkpoint_stream]
                    groups += [c.groups_bucket] if c.groups_bucket else []
                elif isinstance(c, GatewayOptions):
                    # Snapshots, and the aggregator's checkpoints (re-anchoring a stream).
                    snapshots += [c.snapshot_stream, c.checkpoint_stream]
                    buckets.append(c.flags_bucket)
                    groups += [c.groups_bucket] if c.groups_bucket else []
                    requests += [c.snapshot_request_subject] if c.snapshot_request_subject else []
        return cls(
            source_streams=_unique(source) or default.source_streams,
            state_streams=_unique(state) or default.state_streams,
            snapshot_streams=_unique(snapshots) or default.snapshot_streams,
            flag_buckets=_unique(buckets) or default.flag_buckets,
            group_buckets=_unique(groups) or default.group_buckets,
            snapshot_requests=_unique(requests),
        )


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


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


def _stage_roles(cfg: AppConfig, process: str) -> dict[str, list[str]]:
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


def role_conflicts(cfg: AppConfig) -> list[str]:
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


def process_role(cfg: AppConfig, process: str) -> str:
    """The role ``process`` connects as on the embedded bus (see the module docstring)."""
    declared = cfg.declared_nats_role(process)
    if declared is not None:
        return declared
    roles = _stage_roles(cfg, process)
    if len(roles) > 1:
        raise ValueError("; ".join(role_conflicts(cfg)))
    return next(iter(roles), "basic")
