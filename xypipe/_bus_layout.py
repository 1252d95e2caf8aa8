"""The bus layout a config's stages use: which streams and buckets the embedded roles work on.

The permissions themselves are pure functions of a :class:`~xypipe._nats_roles.BusLayout`
(:mod:`xypipe._nats_roles`); this module reads that layout off the configured stages, so it
sits above both the config and the stage modules it inspects.
"""

from __future__ import annotations

from xypipe._config import AppConfig
from xypipe._gateway._options import FlagAdminOptions, GatewayOptions
from xypipe._nats_roles import BusLayout, unique
from xypipe._ownership import OwnershipConfig
from xypipe._stages.ingest import IngestConfig
from xypipe._stages.publish import PublishConfig

__all__ = ["bus_layout"]


def bus_layout(cfg: AppConfig) -> BusLayout:
    """The streams the configured stages use (defaults where no stage names one)."""
    default = BusLayout()
    source: list[str] = []
    state: list[str] = []
    snapshots: list[str] = []
    buckets: list[str] = []
    groups: list[str] = []
    requests: list[str] = []
    leases: list[str] = []
    for pipe in cfg.pipelines.values():
        for decl in pipe.stages:
            c = decl.config
            if isinstance(c, IngestConfig):
                source.append(c.stream)
                state += [c.state.snapshot_stream, c.state.checkpoint_stream]
                # The ingest stage's ownership table (absent from configs that predate it).
                own = getattr(c, "ownership", None)
                if isinstance(own, OwnershipConfig) and own.enabled:
                    leases += [own.bucket, own.members_bucket]
            elif isinstance(c, PublishConfig):
                state += [c.state.snapshot_stream, c.state.checkpoint_stream]
                groups += [c.groups_bucket] if c.groups_bucket else []
            elif isinstance(c, GatewayOptions):
                # Snapshots, and the aggregator's checkpoints (re-anchoring a stream).
                snapshots += [c.snapshot_stream, c.checkpoint_stream]
                buckets.append(c.flags_bucket)
                groups += [c.groups_bucket] if c.groups_bucket else []
                requests += [c.snapshot_request_subject] if c.snapshot_request_subject else []
            elif isinstance(c, FlagAdminOptions):
                buckets.append(c.flags_bucket)
    return BusLayout(
        source_streams=unique(source) or default.source_streams,
        state_streams=unique(state) or default.state_streams,
        snapshot_streams=unique(snapshots) or default.snapshot_streams,
        flag_buckets=unique(buckets) or default.flag_buckets,
        group_buckets=unique(groups) or default.group_buckets,
        snapshot_requests=unique(requests),
        lease_buckets=unique(leases) or default.lease_buckets,
    )
