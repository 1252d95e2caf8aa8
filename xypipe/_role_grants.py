"""What each NATS role may do: one table, for every way a bus admits xypipe's users.

The embedded bus (nats-server ``authorization`` users with NKeys, :mod:`xypipe._nats_roles`) and
the operator-mode trust chain (user JWTs, :mod:`xypipe._creds`) both take a role's permissions
from :data:`GRANTS` through :func:`permissions`, and ``docs/security.md``'s role table is checked
against it by a test — so what a role may do is written once.

A :class:`Grant` is one thing a role may do, in words (for the docs) and as NATS subjects.
Subjects that name a stream or a bucket are expanded over a :class:`Layout` (the streams and
buckets the config's stages use), so JetStream API access is granted per stream and per consumer
operation, never as ``$JS.API.>``. ``{role}`` in a subject is the role's own name (its inbox).

This module is pure data and expansion: no I/O, no configuration loading.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol

import attrs

__all__ = [
    "GRANTS",
    "HEALTH_SUBJECT",
    "ROLES",
    "ROLE_ALIASES",
    "Grant",
    "Layout",
    "Permissions",
    "canonical_role",
    "inbox_prefix",
    "permissions",
    "role_table_markdown",
]

HEALTH_SUBJECT = "xy.exec.health"

LayoutField = Literal["source_streams", "state_streams", "snapshot_streams", "flag_buckets",
                      "snapshot_requests", "group_buckets", "lease_buckets"]


class Layout(Protocol):
    """The JetStream streams and buckets the roles work on (``_nats_roles.BusLayout``)."""

    @property
    def source_streams(self) -> tuple[str, ...]: ...
    @property
    def state_streams(self) -> tuple[str, ...]: ...
    @property
    def snapshot_streams(self) -> tuple[str, ...]: ...
    @property
    def flag_buckets(self) -> tuple[str, ...]: ...
    @property
    def snapshot_requests(self) -> tuple[str, ...]: ...
    @property
    def group_buckets(self) -> tuple[str, ...]: ...
    @property
    def lease_buckets(self) -> tuple[str, ...]: ...


@attrs.frozen
class Permissions:
    """Subjects a user may publish to and subscribe to (NATS wildcards)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def to_server(self) -> dict[str, dict[str, list[str]]]:
        return {"publish": {"allow": list(self.publish)},
                "subscribe": {"allow": list(self.subscribe)}}


@attrs.frozen
class Grant:
    """One thing a role may do: ``what`` in words, and the subjects it takes.

    With ``over`` the subject templates are expanded once per stream/bucket of that layout
    field (``{name}``); a layout with none of them grants nothing.
    """

    what: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    over: LayoutField | None = None

    def expand(self, role: str, layout: Layout) -> tuple[list[str], list[str]]:
        names: Iterable[str | None] = getattr(layout, self.over) if self.over else (None,)
        pub: list[str] = []
        sub: list[str] = []
        for name in names:
            pub += [t.format(name=name, role=role) for t in self.publish]
            sub += [t.format(name=name, role=role) for t in self.subscribe]
        return pub, sub


def inbox_prefix(role: str) -> str:
    """Where a role's request replies arrive; only that role may subscribe below it."""
    return f"_INBOX.{canonical_role(role)}"


# -- JetStream API subjects, per stream (``{name}``) -----------------------------------------
#: Create (idempotently: create, else update) and inspect a stream.
_MANAGE = ("$JS.API.STREAM.CREATE.{name}", "$JS.API.STREAM.UPDATE.{name}",
           "$JS.API.STREAM.INFO.{name}")
#: Ephemeral consumers on a stream: create, inspect, pull, delete, acknowledge, flow control.
_CONSUME = ("$JS.API.CONSUMER.CREATE.{name}", "$JS.API.CONSUMER.CREATE.{name}.>",
            "$JS.API.CONSUMER.INFO.{name}.>", "$JS.API.CONSUMER.DELETE.{name}.>",
            "$JS.API.CONSUMER.MSG.NEXT.{name}.>", "$JS.ACK.{name}.>", "$JS.FC.{name}.>")
#: Direct gets (any replica, no consumer) of a stream's messages.
_READ = ("$JS.API.DIRECT.GET.{name}", "$JS.API.DIRECT.GET.{name}.>",
         "$JS.API.STREAM.MSG.GET.{name}")
_INFO = ("$JS.API.STREAM.INFO.{name}",)
#: nats-server's announcements of a stream's creation and deletion.
_STREAM_ADVISORIES = ("$JS.EVENT.ADVISORY.STREAM.CREATED.{name}",
                      "$JS.EVENT.ADVISORY.STREAM.DELETED.{name}")


def _kv(templates: tuple[str, ...]) -> tuple[str, ...]:
    """The same subjects for a KV bucket (its stream is ``KV_<bucket>``)."""
    return tuple(t.replace("{name}", "KV_{name}") for t in templates)


_KV_WRITE = ("$KV.{name}.>",)

_HEALTH = Grant("report its health and answer health requests",
                publish=(f"{HEALTH_SUBJECT}.>",), subscribe=(HEALTH_SUBJECT,))
_INBOX = Grant("reply to requests; receive replies on its own inbox prefix only",
               publish=("_INBOX.>",), subscribe=("_INBOX.{role}.>",))

#: Every role and what it may do, in the order its subjects are listed. Change a role here and
#: the embedded bus, the trust chain's user JWTs and the docs' table follow.
GRANTS: dict[str, tuple[Grant, ...]] = {
    "aggregator": (
        _HEALTH, _INBOX,
        Grant("publish market data and snapshot answers", publish=("xy.md.>", "xy.agg.>")),
        Grant("receive on-demand snapshot requests", subscribe=("xy.agg.>",)),
        Grant("create and consume the source streams", publish=_MANAGE + _CONSUME,
              over="source_streams"),
        Grant("create, consume and read its state streams (snapshots, checkpoints)",
              publish=_MANAGE + _CONSUME + _READ, over="state_streams"),
        Grant("create, write and read the known-groups buckets",
              publish=_kv(_MANAGE + _CONSUME + _READ) + _KV_WRITE, over="group_buckets"),
        Grant("create, write, watch and read the ownership buckets (group leases, members)",
              publish=_kv(_MANAGE + _CONSUME + _READ) + _KV_WRITE, over="lease_buckets"),
        # nats-py reads the account's JetStream API level before it asks for a bucket with
        # expiry markers (nats-server 2.11+).
        Grant("read its account's JetStream limits and API level",
              publish=("$JS.API.INFO",)),
    ),
    "gateway": (
        _HEALTH, _INBOX,
        Grant("receive market data", subscribe=("xy.md.>",)),
        Grant("ask the aggregator for a fresh snapshot of a group",
              publish=("{name}",), over="snapshot_requests"),
        Grant("direct-get snapshots and checkpoints (no consumer)", publish=_INFO + _READ,
              over="snapshot_streams"),
        Grant("watch and read the feature-flag buckets (read-only: the admin process writes "
              "them)", publish=_kv(_INFO + _CONSUME + _READ), over="flag_buckets"),
        Grant("watch and read the known-groups buckets (read-only)",
              publish=_kv(_INFO + _CONSUME + _READ), over="group_buckets"),
    ),
    "adapter": (
        _HEALTH, _INBOX,
        Grant("publish source ticks and reference data", publish=("xy.src.>", "xy.ref.>")),
        Grant("make sure the source streams exist (create, update, info)", publish=_MANAGE,
              over="source_streams"),
        Grant("hear when a source stream is created or deleted (to republish its reference "
              "data)", subscribe=_STREAM_ADVISORIES, over="source_streams"),
    ),
    "admin": (
        _HEALTH, _INBOX,
        Grant("create, write, watch and read the feature-flag buckets (it serves "
              "/admin/feature-flags)", publish=_kv(_MANAGE + _CONSUME + _READ) + _KV_WRITE,
              over="flag_buckets"),
    ),
    "reader": (
        _HEALTH, _INBOX,
        Grant("ask every instance for its health", publish=(HEALTH_SUBJECT,)),
        Grant("read everything xypipe publishes",
              subscribe=("xy.md.>", "xy.src.>", "xy.ref.>", "xy.agg.>", "xy.exec.>")),
    ),
    "basic": (_HEALTH, _INBOX),
    "superuser": (Grant("everything (operators' tools and tests; never a process: not least "
                        "privilege)", publish=(">",), subscribe=(">",)),),
}

#: Old names of roles, still accepted wherever a role is named (configs, ``xypipe creds``).
ROLE_ALIASES: dict[str, str] = {"publisher": "adapter"}

#: The roles a process (or a command line tool) can connect as.
ROLES = tuple(GRANTS)


def canonical_role(role: str) -> str:
    """``role`` by its current name (``publisher`` is the ``adapter``); others unchanged."""
    return ROLE_ALIASES.get(role, role)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def permissions(role: str, layout: Layout) -> Permissions:
    """What ``role`` may do on a bus laid out as ``layout``."""
    role = canonical_role(role)
    grants = GRANTS.get(role)
    if grants is None:
        raise ValueError(f"unknown NATS role {role!r}; expected one of {', '.join(ROLES)}")
    pub: list[str] = []
    sub: list[str] = []
    for grant in grants:
        p, s = grant.expand(role, layout)
        pub += p
        sub += s
    return Permissions(publish=_unique(pub), subscribe=_unique(sub))


def role_table_markdown(layout: Layout) -> str:
    """The roles as a Markdown table (``docs/security.md``): what, and the exact subjects."""

    def code(subjects: Iterable[str]) -> str:
        return ", ".join(f"`{s}`" for s in subjects) or "—"

    rows = ["| role | may | publish | subscribe |", "|---|---|---|---|"]
    for role, grants in GRANTS.items():
        p = permissions(role, layout)
        may = "; ".join(g.what for g in grants)
        rows.append(f"| `{role}` | {may} | {code(p.publish)} | {code(p.subscribe)} |")
    return "\n".join(rows) + "\n"
