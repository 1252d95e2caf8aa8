"""Asking a running demo how it is: HTTP GETs and ``/healthz`` read the way an operator would.

Blocking ``urllib`` calls run in a worker thread, each with its own timeout, so every wait
stays cancellable from Trio.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import attrs
import trio

from xypipe._demo._layout import Endpoint

__all__ = ["Health", "get", "health", "listening"]

TIMEOUT_S = 2.0


def _get(url: str, data: bytes | None, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""  # refused, reset, timed out: no answer


async def get(url: str, *, data: bytes | None = None,
              limit_s: float = TIMEOUT_S) -> tuple[int, bytes]:
    """``(status, body)``; status 0 when nothing answered within ``limit_s``."""
    return await trio.to_thread.run_sync(_get, url, data, limit_s, abandon_on_cancel=True)


@attrs.frozen
class Health:
    """One process's ``/healthz`` as seen from outside."""

    ready: bool
    #: ``ready``, ``no answer``, or the first reason it gives for not being ready.
    detail: str


async def health(endpoint: Endpoint) -> Health:
    status, body = await get(f"{endpoint.base}/healthz")
    if status == 0:
        return Health(False, "no answer")
    try:
        doc = json.loads(body)
    except ValueError:
        return Health(False, f"HTTP {status}, not JSON")
    ready = status == 200 and isinstance(doc, dict) and doc.get("ready") is True
    if ready:
        return Health(True, "ready")
    reasons = doc.get("reasons") if isinstance(doc, dict) else None
    if isinstance(reasons, list) and reasons:
        return Health(False, f"not ready: {reasons[0]}")
    processes = doc.get("processes") if isinstance(doc, dict) else None
    if isinstance(processes, dict):
        down = sorted(str(name) for name, up in processes.items() if not up)
        return Health(False, f"not ready: waiting for {', '.join(down) or 'its processes'}")
    return Health(False, f"not ready (HTTP {status})")


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (a port already taken)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
