"""Values that travel between stages and NATS."""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Publish:
    """Something to publish on NATS. ``nbytes`` lets edges budget it in bytes."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data)
