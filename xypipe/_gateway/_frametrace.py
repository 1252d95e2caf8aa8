"""The gateway's ``gateway`` span (tracing on only, :mod:`xypipe._tracing`): a delta whose
NATS headers carry a ``traceparent`` gets a span under the aggregator's ``publish`` span, from
its receipt to the end of the tick's flush that wrote the frames carrying it, with the delta's
degradation level as ``xy.level``, the connections it made due as ``xy.connections`` and what
the flush did as ``xy.flush.*`` (frames written, bytes, writers woken)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from xypipe._contracts import decode
from xypipe._errors import ContractError
from xypipe._gateway._flush import FlushTally
from xypipe._gateway._store import Msg
from xypipe.contracts import Delta

if TYPE_CHECKING:
    from xypipe._tracing import ParentReader, SpanContext, Tracer


def received_traces(traces: ParentReader, batch: Sequence[Msg]
                    ) -> list[tuple[SpanContext, Msg]]:
    """The traced messages of a batch, with their parents (malformed headers counted)."""
    out = []
    for msg in batch:
        if msg.headers:
            sc = traces.read(msg.headers, msg.subject)
            if sc is not None:
                out.append((sc, msg))
    return out


def trace_frames(tracer: Tracer, traced: list[tuple[SpanContext, Msg]], made: dict[int, int],
                 received: float, flushed: float, tally: FlushTally | None) -> None:
    """One ``gateway`` span per traced delta: ``received`` to ``flushed`` (the wall clock the
    frames carry); ``made``: per message, the connections it made due (``xy.connections``).
    Connections whose writer was woken write their frame just after."""
    for parent, msg in traced:
        attributes: dict[str, str | int] = {"xy.subject": msg.subject,
                                            "xy.connections": made.get(id(msg), 0)}
        try:
            # Only a sampled delta is decoded twice (the hub decoded it already).
            attributes["xy.level"] = int(decode(Delta, msg.data, where=msg.subject).level)
        except ContractError:
            pass  # the hub counted and logged it already
        if tally is not None:
            # The whole flush's (the tick's deltas share its frames).
            attributes.update({"xy.flush.frames": tally.frames, "xy.flush.bytes": tally.bytes,
                               "xy.flush.woken": tally.woken})
        tracer.span("gateway", parent, int(received * 1e9), int(flushed * 1e9), attributes)
