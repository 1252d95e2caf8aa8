"""The groups one browser session holds, and the rules for taking one (sans-I/O).

A group is taken (subscribe, resume) only if its name is well formed, the session is under
``max_groups``, the token's patterns cover it, the aggregator publishes it (the known-groups
list) and the connection has a snapshot look-up left (a token bucket). Every refusal is an
``Error`` frame naming the group and why; ACL refusals are audited. A refreshed token that
grants less takes back what it no longer covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from xypipe._gateway._auth import Principal
from xypipe._gateway._bucket import TokenBucket
from xypipe._gateway._session_effects import (
    Audit,
    Effects,
    LookupLimited,
    RemoteProtocolError,
    RequestSnapshot,
    ResumeGroup,
    SubscribeGroup,
    UnknownGroupError,
    UnsubscribeGroup,
)
from xypipe._gateway._session_policy import KnownGroups, SessionPolicy
from xypipe._md.projection import is_projection, stream_problem
from xypipe._validate import GROUP_MAX
from xypipe.contracts import Error, ErrorCode, GroupRef, ResumePoint, ServerFrame, Subscribed


class SessionGroups:
    """What one session is subscribed to: group -> shards (empty = every shard)."""

    def __init__(self, policy: SessionPolicy, known: KnownGroups, out: Effects,
                 now: float) -> None:
        self.policy = policy
        #: Groups the aggregator publishes (shared, updated by the gateway's KV watch).
        self.known = known
        self.out = out
        self.groups: dict[str, frozenset[int]] = {}
        self._lookups = TokenBucket(policy.snapshot_lookups_per_s, policy.snapshot_lookup_burst,
                                    now)
        self._limited_run = 0

    def _refuse(self, message: str, code: ErrorCode, ref: int, group: str) -> None:
        self.out.violation(RemoteProtocolError(message, code, fatal=False, ref_id=ref,
                                               group=group))

    def _deny(self, who: str, group: str, subject: str, ref: int, action: str) -> None:
        self.out.add(Audit(action, "denied", {
            "principal": who, "group": group, "subject": subject,
        }))
        self._refuse(
            f"not allowed to subscribe to {subject!r} (group {group!r}): the token's patterns "
            "do not cover it", ErrorCode.ERROR_CODE_ACL_DENIED, ref, group,
        )

    def _check(self, principal: Principal, group: str, shards: Iterable[int], ref: int,
               action: str, now: float) -> bool:
        problem = stream_problem(group)
        if problem is not None:
            self._refuse(f"group name {group!r}: expected a group or group/projection, each "
                         f"1-{GROUP_MAX} characters of A-Z a-z 0-9 _ -; {problem}",
                         ErrorCode.ERROR_CODE_UNKNOWN_GROUP, ref, group)
            return False
        if shards and is_projection(group):
            self._refuse(f"projection {group!r}: one stream without shards (asked for shards "
                         f"{sorted(set(shards))})", ErrorCode.ERROR_CODE_UNKNOWN_GROUP, ref, group)
            return False
        if group not in self.groups and len(self.groups) >= self.policy.max_groups:
            self._refuse(f"subscription limit of {self.policy.max_groups} groups reached",
                         ErrorCode.ERROR_CODE_RATE_LIMITED, ref, group)
            return False
        decision = principal.acl.check_group(group, shards)
        if not decision.allowed:
            self._deny(principal.subject, group, decision.denied_subject, ref, action)
            return False
        if not self.known.knows(group):
            like = self.known.like(group)
            hint = f"; did you mean {like!r}? group names are case-sensitive" if like else ""
            self.out.violation(UnknownGroupError(
                f"group {group!r} is not published by the aggregator{hint}",
                ErrorCode.ERROR_CODE_UNKNOWN_GROUP, fatal=False, ref_id=ref, group=group))
            return False
        return self._lookup(group, action, ref, now)

    def _lookup(self, group: str, action: str, ref: int, now: float) -> bool:
        """Take one snapshot look-up from the connection's bucket; refuse (clear error,
        counted) when it is empty. Nothing is subscribed or requested for a refused one."""
        if self._lookups.take(now):
            self._limited_run = 0
            return True
        p = self.policy
        self._limited_run += 1
        self.out.add(LookupLimited(group, action, self._limited_run == 1))
        self.out.send(ServerFrame(error=Error(
            code=ErrorCode.ERROR_CODE_RATE_LIMITED, ref_id=ref, group=group, fatal=False,
            message=(f"{action} of {group!r} refused: more than {p.snapshot_lookups_per_s:g} "
                     f"snapshot look-ups/s (burst {p.snapshot_lookup_burst}) on this "
                     "connection; retry later"),
        )))
        return False

    def subscribe(self, principal: Principal, refs: Sequence[GroupRef], ref: int,
                  now: float) -> None:
        done: list[GroupRef] = []
        for g in refs:
            shards = frozenset(g.shards)
            if not self._check(principal, g.group, shards, ref, "subscribe", now):
                continue
            self.out.add(Audit("subscribe", "allowed", {
                "principal": principal.subject, "group": g.group, "shards": sorted(shards),
            }))
            self.groups[g.group] = shards
            self.out.add(SubscribeGroup(g.group, shards, ref))
            done.append(GroupRef(group=g.group, shards=sorted(shards)))
        if done:
            self.out.send(ServerFrame(subscribed=Subscribed(groups=done)))

    def unsubscribe(self, refs: Sequence[GroupRef]) -> None:
        for g in refs:
            if g.group in self.groups:
                del self.groups[g.group]
                self.out.add(UnsubscribeGroup(g.group))

    def resume(self, principal: Principal, points: Sequence[ResumePoint], ref: int,
               now: float) -> None:
        by_group: dict[str, list[ResumePoint]] = {}
        for p in points:
            by_group.setdefault(p.group, []).append(p)
        done: list[GroupRef] = []
        for group, pts in by_group.items():
            if not self._check(principal, group, (), ref, "resume", now):
                continue
            self.out.add(Audit("resume", "allowed", {
                "principal": principal.subject, "group": group,
                "points": [[p.shard, p.epoch, p.seq] for p in pts],
            }))
            self.groups[group] = frozenset()
            self.out.add(ResumeGroup(group, tuple(pts), ref))
            done.append(GroupRef(group=group))
        if done:
            self.out.send(ServerFrame(subscribed=Subscribed(groups=done)))

    def snapshot_request(self, group: str, ref: int, now: float) -> None:
        if group not in self.groups:
            self._refuse(f"snapshot request for {group!r}, which this connection has not "
                         "subscribed", ErrorCode.ERROR_CODE_UNKNOWN_GROUP, ref, group)
        elif self._lookup(group, "snapshot_request", ref, now):
            self.out.add(RequestSnapshot(group, ref))

    def revoke(self, principal: Principal, ref: int) -> None:
        """A refreshed token may grant less: drop what it no longer covers, loudly."""
        for group, shards in list(self.groups.items()):
            decision = principal.acl.check_group(group, shards)
            if not decision.allowed:
                self._deny(principal.subject, group, decision.denied_subject, ref, "refresh")
                del self.groups[group]
                self.out.add(UnsubscribeGroup(group))
