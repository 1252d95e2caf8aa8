"""A process's graceful drain: asked for once, carried out by the stages that hold clients.

SIGTERM (``xypipe run`` as a supervised worker, or alone) and an admin request
(``POST /admin/drain`` on a gateway) both call :meth:`DrainRequest.request`. The runner then
reports not-ready (``draining: <reason>``), waits until every stage that joined the drain
(:meth:`DrainRequest.join`: the gateway, which moves its clients away) has finished, and stops
the pipelines. A supervised worker that ends this way exits with :data:`DRAINED_EXIT`, which its
supervisor answers by starting a fresh copy at once — a planned replacement, not a failure
(docs/architecture.md "Graceful drain").
"""

from __future__ import annotations

import trio

from xypipe._stage import Shared

__all__ = ["DRAIN", "DRAINED_EXIT", "DrainRequest", "DrainTicket"]

#: The exit status of a supervised worker that drained (EX_TEMPFAIL: "try again"): its
#: supervisor replaces it without counting a failure.
DRAINED_EXIT = 75


class DrainRequest:
    def __init__(self) -> None:
        #: Set once the drain is asked for.
        self.requested = trio.Event()
        #: Why (``SIGTERM``, ``admin <subject>``): in /healthz's reasons and the logs.
        self.reason = ""
        self._joined = 0
        self._done = 0
        self._all_finished = trio.Event()
        self._all_finished.set()

    def request(self, reason: str) -> bool:
        """Ask for the drain; False when it was already asked for (the first reason stays)."""
        if self.requested.is_set():
            return False
        self.reason = reason
        self.requested.set()
        return True

    def join(self) -> DrainTicket:
        """A stage that moves clients away takes part: the process stops only after the
        ticket's :meth:`DrainTicket.finish` (call it in a ``finally``: a stage that ends
        without draining is finished too)."""
        self._joined += 1
        self._all_finished = trio.Event()
        return DrainTicket(self)

    def _ticket_done(self) -> None:
        self._done += 1
        if self._done >= self._joined:
            self._all_finished.set()

    async def wait_finished(self) -> None:
        """Until every stage that joined has finished its drain (at once when none joined)."""
        await self._all_finished.wait()


class DrainTicket:
    """One stage's part in the drain (see :meth:`DrainRequest.join`)."""

    def __init__(self, request: DrainRequest) -> None:
        self._request = request
        self._done = False

    def finish(self) -> None:
        """This stage has moved its clients away (or ended); idempotent."""
        if not self._done:
            self._done = True
            self._request._ticket_done()


#: The process's drain, shared by the runner and its stages.
DRAIN = Shared("process.drain", DrainRequest)
