"""Rendezvous (highest-random-weight) hashing: which live member owns a group.

Every member computes the same answer from the same set of live members, with no coordination:
a group goes to the member with the highest ``weight(member, group)``. When a member joins, it
takes from each other member only the groups it now outweighs them on (about ``1/n`` of the
groups); when one leaves, only its groups move, each to its runner-up. A restarted member under
the same name gets back exactly the groups it had.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["assign", "owner_of", "weight"]


def weight(member: str, group: str) -> int:
    """A 64-bit pseudo-random weight, the same in every process (not Python's ``hash``)."""
    digest = hashlib.blake2b(f"{member}\x00{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(group: str, members: Iterable[str]) -> str | None:
    """The member ``group`` belongs to (ties, never seen in practice, go to the larger name)."""
    return max(members, key=lambda m: (weight(m, group), m), default=None)


def assign(groups: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """Every group's owner among ``members`` (none: an empty mapping)."""
    live = tuple(members)
    if not live:
        return {}
    return {g: owner_of(g, live) or "" for g in groups}
