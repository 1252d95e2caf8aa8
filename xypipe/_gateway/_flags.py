"""Admin feature flags: validation, the store (a JetStream KV bucket), and their meaning.

Flags are health and rollout switches, never on the trading path. Each flag is one key in the
bucket holding a ``FeatureFlag`` (JSON value, who, when); every gateway instance watches the
bucket, so a change made through any instance applies everywhere, live. The bucket keeps a few
revisions per key, so the store itself also remembers old values.

Known flags:

``gateway.force_level``
    ``null`` or an integer 0..3: pin every connection's degradation level (``null`` hands the
    level back to each connection's send-queue pressure).
``gateway.disabled_groups``
    a list of group names: those groups stop flowing to every connection (they are reported as
    paused in a ``DegradeChange``) and resync from a snapshot when re-enabled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypedDict

import attrs

from xypipe._contracts import ContractDecoder, decode
from xypipe._degrade import Level
from xypipe._errors import ADM_FLAG_INVALID, XyError
from xypipe._validate import GROUP_MAX, group_problem
from xypipe.contracts import FeatureFlag

FORCE_LEVEL = "gateway.force_level"
DISABLED_GROUPS = "gateway.disabled_groups"

#: A flag's value once validated: a level (or ``None``) or a sorted list of group names.
FlagData = int | list[str] | None


class FlagJson(TypedDict):
    """A flag as the admin API shows it."""

    name: str
    value: FlagData
    updated_by: str
    updated_at_us: int
    revision: int


class FlagError(XyError, ValueError):
    """A flag change is invalid; the message says which flag and what was expected.

    Still a :class:`ValueError` for callers that caught it as one."""

    code = ADM_FLAG_INVALID


def _check_force_level(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise FlagError(f"{FORCE_LEVEL}: expected null or an integer 0..3, got {json.dumps(value)}")
    return value


def _check_groups(value: object) -> list[str]:
    if not isinstance(value, list):
        raise FlagError(f"{DISABLED_GROUPS}: expected a list of group names, got "
                        f"{json.dumps(value)}")
    groups: set[str] = set()
    for i, g in enumerate(value):
        problem = group_problem(g)
        if problem is not None or not isinstance(g, str):
            raise FlagError(
                f"{DISABLED_GROUPS}[{i}]: expected a group name of 1-{GROUP_MAX} characters "
                f"A-Z a-z 0-9 _ -, got {json.dumps(g)}: {problem}"
            )
        groups.add(g)
    return sorted(groups)


KNOWN: dict[str, tuple[Callable[[object], FlagData], FlagData]] = {
    FORCE_LEVEL: (_check_force_level, None),
    DISABLED_GROUPS: (_check_groups, []),
}


def validate(name: str, value: object) -> FlagData:
    known = KNOWN.get(name)
    if known is None:
        raise FlagError(f"unknown flag {name!r}: expected one of {', '.join(sorted(KNOWN))}")
    return known[0](value)


@attrs.frozen
class FlagValue:
    name: str
    value: FlagData
    updated_by: str = ""
    updated_at_us: int = 0
    revision: int = 0

    def to_json(self) -> FlagJson:
        return {"name": self.name, "value": self.value, "updated_by": self.updated_by,
                "updated_at_us": self.updated_at_us, "revision": self.revision}

    def encode(self) -> bytes:
        return FeatureFlag(
            name=self.name, value_json=json.dumps(self.value), updated_by=self.updated_by,
            updated_at_us=self.updated_at_us,
        ).SerializeToString()

    @classmethod
    def decode(cls, data: bytes, revision: int = 0, *,
               decoder: ContractDecoder | None = None) -> FlagValue:
        """A stored flag. Bytes that are no ``FeatureFlag`` raise
        :class:`~xypipe._errors.ContractError` (counted by ``decoder``, or the process
        default); a value that is not JSON or not valid for its flag, :class:`FlagError`."""
        where = f"feature flag (revision {revision})"
        f = (decoder.decode(FeatureFlag, data, where=where) if decoder is not None
             else decode(FeatureFlag, data, where=where))
        try:
            value = json.loads(f.value_json) if f.value_json else None
        except json.JSONDecodeError as exc:
            raise FlagError(f"flag {f.name!r}: stored value is not JSON ({exc})") from None
        return cls(f.name, validate(f.name, value), f.updated_by, f.updated_at_us, revision)


def defaults() -> dict[str, FlagValue]:
    return {name: FlagValue(name, default) for name, (_, default) in KNOWN.items()}


def forced_level(flags: dict[str, FlagValue]) -> Level | None:
    """The level ``gateway.force_level`` pins every connection to (None: not pinned)."""
    value = flags[FORCE_LEVEL].value
    return Level(value) if isinstance(value, int) else None


def disabled_groups(flags: dict[str, FlagValue]) -> frozenset[str]:
    """The groups ``gateway.disabled_groups`` stops for every connection."""
    value = flags[DISABLED_GROUPS].value
    return frozenset(value) if isinstance(value, list) else frozenset()
