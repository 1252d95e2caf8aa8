"""Ownership switched off (``enabled = false``): this aggregator owns every group, fence 0 —
the single-aggregator behaviour, no buckets touched."""

from __future__ import annotations

from collections.abc import Iterable

import trio

from xypipe._ownership._config import Lease, ReleaseHook

__all__ = ["AllOwned"]


class AllOwned:
    """Owns every offered group; publishes every group (offered or not), unfenced."""

    def __init__(self, member: str) -> None:
        self.member = member
        self.on_release: ReleaseHook | None = None
        self._owned = frozenset[str]()
        self._epochs: dict[str, int] = {}
        self._changed = trio.Event()

    @property
    def owned(self) -> frozenset[str]:
        return self._owned

    def lease(self, group: str) -> Lease:
        return Lease(group, self.member, 0, self._epochs.get(group, 0))

    def may_publish(self, group: str) -> bool:
        return True

    def offer(self, groups: Iterable[str]) -> None:
        owned = self._owned | frozenset(groups)
        if owned != self._owned:
            self._owned = owned
            self._changed.set()
            self._changed = trio.Event()

    async def wait_change(self, seen: frozenset[str]) -> frozenset[str]:
        while self._owned == seen:
            await self._changed.wait()
        return self._owned

    def set_epoch(self, group: str, epoch: int) -> None:
        self._epochs[group] = epoch
