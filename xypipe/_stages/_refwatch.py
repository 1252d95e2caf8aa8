"""A publisher's reference data follows its stream: republished whenever the stream is created.

Contracts are worth publishing only into a stream that keeps them (see
:mod:`xypipe._stages._srcstream`). Making sure the stream exists before the first contract covers
the start; it does not cover a stream created *after* the contracts went out — a publisher on
core NATS only (``ensure_stream = false``) that started before the aggregator, a stream deleted
and made again, a memory-backed stream lost with a nats-server restart. Without this, the
symbols of those contracts stay in the default group until the next timed republish
(``contracts_every_s``, 30 s by default).

nats-server announces every stream it creates or deletes on
``$JS.EVENT.ADVISORY.STREAM.{CREATED,DELETED}.<stream>``; the publisher listens there (and for
its own reconnects, during which an announcement may be missed) and acts by one rule,
:func:`action_for`:

* the stream was created (by anyone, ourselves included): republish the contracts;
* it was deleted: make it again if this publisher ensures the stream (its creation is then
  announced, which republishes); otherwise wait for whoever makes it;
* the connection came back: make sure the stream exists (if ours to ensure) and republish.

A duplicate contract is harmless (same route, same version); a missing one is not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import attrs
import trio

from xypipe.abc import NatsClient, Subscription

Event = Literal["created", "deleted", "reconnected"]

#: The subjects nats-server announces a stream's creation and deletion on.
ADVISORY = "$JS.EVENT.ADVISORY.STREAM.{kind}.{name}"
_KINDS: dict[str, Event] = {"CREATED": "created", "DELETED": "deleted"}


@attrs.frozen
class Action:
    """What one event asks of the publisher."""

    ensure: bool
    republish: bool


def advisory_subjects(stream: str) -> tuple[str, ...]:
    """The advisory subjects to listen on for ``stream``."""
    return tuple(ADVISORY.format(kind=k, name=stream) for k in _KINDS)


def event_of(subject: str, stream: str) -> Event | None:
    """The event an advisory subject announces for ``stream`` (None: another stream/kind)."""
    for kind, event in _KINDS.items():
        if subject == ADVISORY.format(kind=kind, name=stream):
            return event
    return None


def action_for(event: Event, *, ensures_stream: bool) -> Action:
    """The rule of the module doc."""
    if event == "created":
        return Action(ensure=False, republish=True)
    if event == "deleted":
        return Action(ensure=ensures_stream, republish=False)
    return Action(ensure=ensures_stream, republish=True)


async def follow_stream(
    nc: NatsClient,
    stream: str,
    *,
    ensures_stream: bool,
    ensure: Callable[[], Awaitable[object]],
    republish: Callable[[Event], Awaitable[None]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for ``stream``'s creation/deletion and for reconnects, acting by
    :func:`action_for`; ``task_status.started()`` once listening (start it before the first
    contract goes out, so a creation in between is not missed). Runs until cancelled."""
    events = nc.events()
    subjects = advisory_subjects(stream)
    async with nc.subscribe(subjects[0]) as created, nc.subscribe(subjects[1]) as deleted, \
            trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[Event](16)

        async def advisories(sub: Subscription) -> None:
            async for batch in sub:
                for msg in batch:
                    event = event_of(msg.subject, stream)
                    if event is not None:
                        await send.send(event)

        async def reconnects() -> None:
            async for ev in events:
                if ev.kind == "reconnected":
                    await send.send("reconnected")

        nursery.start_soon(advisories, created)
        nursery.start_soon(advisories, deleted)
        nursery.start_soon(reconnects)
        task_status.started()
        try:
            async for event in receive:
                action = action_for(event, ensures_stream=ensures_stream)
                if action.ensure:
                    await ensure()
                if action.republish:
                    await republish(event)
        finally:
            events.close()


__all__ = ["ADVISORY", "Action", "Event", "action_for", "advisory_subjects", "event_of",
           "follow_stream"]
