"""Admin flag writes fail closed: answered as failed means never applied by the admin and never
in force for long anywhere — a late one is reverted; every change that does land is audited
with the principal that made it."""

from __future__ import annotations

import os
import signal

import trio
from gw_support import Keys, admin_board, http_port, running_gateway, server_of
from test_ws_admin import http

from xypipe._embedded import EmbeddedNats
from xypipe._gateway._flags import FORCE_LEVEL, FlagValue
from xypipe._gateway._flagwatch import REVERT_PRINCIPAL
from xypipe._nats import NatsClient, connect

PATH = "/admin/feature-flags"


async def _wait_connected(nc: NatsClient, want: bool) -> None:
    """Until the client's state is ``want`` (its own events say when it changes)."""
    events = nc.events()
    with trio.fail_after(15):
        while nc.is_connected != want:
            await events.receive()


async def _until(cond, limit_s: float = 15) -> None:  # type: ignore[no-untyped-def]
    """Poll state another task changes (the gateway's flags) with a hang guard."""
    with trio.fail_after(limit_s):
        while not cond():  # noqa: ASYNC110 (the flags have no event to await)
            await trio.sleep(0.02)


async def _stored(url: str, key: str) -> FlagValue | None:
    async with connect(url, name="flag-reader") as nc:
        kv = await nc.jetstream().kv("xy_feature_flags", create=False)
        entry = await kv.get(key)
        return None if entry is None else FlagValue.decode(entry.value, entry.revision)


async def test_flag_write_while_nats_is_down_fails_and_never_lands_later(
    nats_server: EmbeddedNats, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys, nats_timeout_ms=500) as runner:
        port = http_port(runner)
        srv = server_of(runner)
        admin = keys.token("root", roles=["admin"])

        await nats_server.stop()
        await _wait_connected(runner.nats, False)
        status, body = await http(port, "PUT", PATH, admin, {"name": FORCE_LEVEL, "value": 3})
        assert status == 503
        assert "not applied" in body["error"] and "will not take effect later" in body["error"]

        await nats_server.start()
        await _wait_connected(runner.nats, True)
        await runner.nats.flush()
        # Anything still buffered would have been sent by now; a write made after it is
        # stored after it, so once that one is applied the failed one had its chance.
        status, body = await http(port, "PUT", PATH, admin,
                                  {"name": "gateway.disabled_groups", "value": ["rates"]})
        assert status == 200
        stored = await _stored(nats_server.url, "gateway.disabled_groups")
        assert stored is not None and stored.value == ["rates"] and stored.updated_by == "root"
        assert await _stored(nats_server.url, FORCE_LEVEL) is None
        assert srv.flags[FORCE_LEVEL].value is None

    failed = json_logs.find(audit=True, action="admin.flag", outcome="failed")
    assert len(failed) == 1
    assert failed[0]["code"] == "XY-ADM-011" and failed[0]["sub"] == "root"
    assert not json_logs.find(audit=True, action="admin.flag.applied", flag=FORCE_LEVEL)


async def test_a_write_that_reaches_a_stalled_server_late_is_never_applied_and_is_reverted(
    nats_server: EmbeddedNats, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys, nats_timeout_ms=300) as runner:
        port = http_port(runner)
        srv = server_of(runner)
        board = admin_board(runner)
        admin = keys.token("root", roles=["admin"])
        assert nats_server.pid is not None
        applied_levels: list[object] = []
        original = board.apply

        def spy(flag: FlagValue) -> None:
            if flag.name == FORCE_LEVEL:
                applied_levels.append(flag.value)
            original(flag)

        board.apply = spy  # type: ignore[method-assign]
        # The gateway watches the bucket the admin created (it waits for it to exist).
        await _until(lambda: srv.flags.watching)

        # The server stops reading: the write sits in its socket, the request times out ...
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            status, _ = await http(port, "PUT", PATH, admin, {"name": FORCE_LEVEL, "value": 2})
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
        assert status == 503
        # ... and the server stores it when it resumes. The admin process recognises its
        # failed write, never applies it and puts the old value back (conditional on the late
        # revision, so a newer change would win over the revert).
        with trio.fail_after(15):
            while True:
                stored = await _stored(nats_server.url, FORCE_LEVEL)
                if stored is not None and stored.updated_by == REVERT_PRINCIPAL:
                    break
                await trio.sleep(0.05)
        assert stored.value is None
        await _until(lambda: board[FORCE_LEVEL].revision == stored.revision)
        assert board[FORCE_LEVEL].value is None
        assert 2 not in applied_levels
        # A gateway only reads the bucket: it follows the store, the revert included.
        await _until(lambda: srv.flags[FORCE_LEVEL].revision == stored.revision)
        assert srv.flags[FORCE_LEVEL].value is None

    reverted = json_logs.find(audit=True, action="admin.flag", outcome="reverted")
    assert len(reverted) == 1
    assert reverted[0]["sub"] == "root" and reverted[0]["late_value"] == 2
    assert reverted[0]["code"] == "XY-ADM-014"
    # The gateway audits what it applied: the late write (for the moment it took the admin
    # to see it) and the revert, itself a change in the store.
    applied = json_logs.find(audit=True, action="admin.flag.applied", flag=FORCE_LEVEL)
    assert [(a["sub"], a["new"]) for a in applied] == [("root", 2), (REVERT_PRINCIPAL, None)]


async def test_changes_written_by_anyone_are_applied_and_audited_once(
    nats_server: EmbeddedNats, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys) as runner:
        srv = server_of(runner)
        port = http_port(runner)
        admin = keys.token("root", roles=["admin"])
        # A change written straight into the bucket (another gateway, an operator's tool).
        async with connect(nats_server.url, name="other-gateway") as nc:
            kv = await nc.jetstream().kv("xy_feature_flags", create=False)
            rev = await kv.put(FORCE_LEVEL, FlagValue(FORCE_LEVEL, 1, "carol", 1).encode())
        await _until(lambda: srv.flags[FORCE_LEVEL].revision == rev)
        assert srv.flags[FORCE_LEVEL].value == 1
        # This gateway's view was current, so its conditional write expects that revision.
        status, body = await http(port, "PUT", PATH, admin, {"name": FORCE_LEVEL, "value": 0})
        assert status == 200 and body["flag"]["revision"] > rev
        await _until(lambda: srv.flags[FORCE_LEVEL].value == 0)
    applied = json_logs.find(audit=True, action="admin.flag.applied", flag=FORCE_LEVEL)
    assert [(a["sub"], a["old"], a["new"]) for a in applied] == [
        ("carol", None, 1), ("root", 1, 0)]
