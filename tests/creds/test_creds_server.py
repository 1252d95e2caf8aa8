"""The trust chain against a real nats-server in operator mode with mutual TLS.

Each role does what its grants allow; each refusal is the server's, asserted where the client
sees it. Every negative test has its positive twin on the same server, differing only in the
one thing under test (an expiry, an issuer, a revocation, a certificate), so a refusal cannot
pass for a broken setup.
"""

from __future__ import annotations

import datetime
import json
import ssl
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from creds_support import Refusals, as_role, audited, make_chain, next_event

from xypipe._creds import (
    CertFiles,
    Chain,
    KeyKind,
    NKey,
    client_tls_context,
    encode,
    follow_creds,
    format_creds,
    user_claims,
)
from xypipe._creds._pki import issue_certificate, make_ca
from xypipe._creds._push import push_accounts
from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._errors import BridgeError, NatsRefused
from xypipe._nats import Refusal, connect

pytestmark = pytest.mark.nats

SRC, SNAP = "XY_SRC", "XY_MD_SNAPSHOT"


# --------------------------------------------------------------------------- allowed


async def test_every_role_does_what_its_grants_allow(
    secured: EmbeddedNats, chain: Chain
) -> None:
    async with (as_role(secured, chain, "aggregator") as agg,
                as_role(secured, chain, "adapter") as pub,
                as_role(secured, chain, "gateway") as gw,
                as_role(secured, chain, "reader") as reader,
                as_role(secured, chain, "basic") as basic,
                as_role(secured, chain, "admin") as admin,
                as_role(secured, chain, "superuser") as superuser):
        # The adapter makes sure the source stream exists and publishes ticks into it.
        await pub.jetstream(timeout=2).ensure_stream(SRC, ["xy.src.>", "xy.ref.>"])
        await agg.jetstream(timeout=2).ensure_stream(SNAP, ["xy.md.snapshot.>"],
                                                     max_msgs_per_subject=1)
        pub_js = pub.jetstream(timeout=5)
        assert await pub_js.publish("xy.src.tick.xnas.aapl", b"tick-1") == 1  # stored
        await pub_js.publish("xy.ref.contract.xnas.aapl", b"contract-1")
        # The aggregator reads them through a consumer of its own on the source stream.
        async with agg.jetstream(timeout=2).pull(SRC, "xy.src.>") as consumer:
            with trio.fail_after(20):
                batch: list[bytes] = []
                while not batch:
                    batch = [m.data for m in await consumer.fetch(1, timeout=1)]
        assert batch == [b"tick-1"]
        # Market data: the gateway and a reader receive what the aggregator publishes.
        async with gw.subscribe("xy.md.>") as gw_sub, reader.subscribe("xy.md.>") as rd_sub:
            agg.publish_nowait("xy.md.tick.eq", b"delta-1")
            with trio.fail_after(10):
                assert [m.data for m in await gw_sub.receive()] == [b"delta-1"]
                assert [m.data for m in await rd_sub.receive()] == [b"delta-1"]
        # Snapshots: stored by the aggregator, read by the gateway with a direct get.
        await agg.jetstream(timeout=2).publish("xy.md.snapshot.eq", b"snap-1")
        got = await gw.jetstream(timeout=2).direct_get_last(SNAP, "xy.md.snapshot.eq")
        assert got is not None and got.data == b"snap-1"
        # Known groups: written by the aggregator, read by the gateway.
        groups = await agg.jetstream(timeout=2).kv("xy_md_groups")
        await groups.put("eq", b"{}")
        entry = await (await gw.jetstream(timeout=2).kv("xy_md_groups", create=False)).get("eq")
        assert entry is not None and entry.value == b"{}"
        # Feature flags: the admin creates and writes them, the gateway watches and reads.
        flags = await admin.jetstream(timeout=2).kv("xy_feature_flags", history=16)
        assert await flags.put("force_level", b"1") >= 1
        read = await gw.jetstream(timeout=2).kv("xy_feature_flags", create=False)
        entry = await read.get("force_level")
        assert entry is not None and entry.value == b"1"
        async with read.watch(">") as watch:
            with trio.fail_after(10):
                assert (await anext(watch)).key == "force_level"
        # Health: a reader asks every instance, a basic process answers to the reader's inbox.
        async with basic.subscribe("xy.exec.health") as asks, \
                reader.subscribe("_INBOX.reader.health") as answers:
            reader.publish_nowait("xy.exec.health", b"?")
            with trio.fail_after(10):
                assert [m.data for m in await asks.receive()] == [b"?"]
                basic.publish_nowait("_INBOX.reader.health", b"ok")
                assert [m.data for m in await answers.receive()] == [b"ok"]
        # The superuser may do anything (operators and tests).
        await superuser.jetstream(timeout=2).ensure_stream("ADMIN_ONLY", ["admin.>"])
        await superuser.jetstream(timeout=2).delete_stream("ADMIN_ONLY")
        # Nothing of this was refused.
        assert [nc.statistics().refusals
                for nc in (agg, pub, gw, reader, basic, admin, superuser)] == [0] * 7


# --------------------------------------------------------------------------- refused


# role, what it tries, the subject the server names in its refusal
OUTSIDE = [
    ("adapter", "publish", "xy.md.tick.forged"),
    ("gateway", "publish", "xy.md.tick.forged"),
    ("gateway", "subscribe", "xy.src.>"),
    ("aggregator", "publish", "xy.src.tick.forged"),
    ("reader", "publish", "xy.md.tick.forged"),
    ("basic", "subscribe", "xy.md.>"),
    ("admin", "publish", "xy.md.tick.forged"),
    ("admin", "subscribe", "xy.md.>"),
    # The gateway only reads the feature flags: writing one is the admin's.
    ("gateway", "publish", "$KV.xy_feature_flags.gateway.force_level"),
    # JetStream consumers on streams a role may not read.
    ("gateway", "consume", SRC),
    ("adapter", "consume", SRC),
    ("aggregator", "consume", "KV_xy_feature_flags"),
    ("admin", "consume", SRC),
]


@pytest.mark.parametrize(("role", "action", "target"), OUTSIDE,
                         ids=[f"{r}-{a}-{t}" for r, a, t in OUTSIDE])
async def test_each_role_is_refused_outside_its_permissions(
    secured: EmbeddedNats, chain: Chain, role: str, action: str, target: str,
    refusals: Refusals, caplog: pytest.LogCaptureFixture,
) -> None:
    async with as_role(secured, chain, "superuser") as superuser:
        js = superuser.jetstream(timeout=2)
        await js.ensure_stream(SRC, ["xy.src.>", "xy.ref.>"])
        await js.kv("xy_feature_flags")
    denied: list[str] = []
    async with as_role(secured, chain, role, on_permission_denied=denied.append,
                       refusals=refusals) as nc:
        events = nc.events()
        if action == "publish":
            nc.publish_nowait(target, b"forged")
            detail = await next_event(events, "error", target)
            subject, op = target, "jetstream" if target.startswith("$") else "publish"
            assert detail.detail == f'Permissions Violation for Publish to "{target}"'
        elif action == "subscribe":
            async with nc.subscribe(target):
                detail = await next_event(events, "error", target)
            subject, op = target, "subscribe"
            assert detail.detail == f'Permissions Violation for Subscription to "{target}"'
        else:
            with pytest.raises(BridgeError):
                async with nc.jetstream(timeout=1).pull(target, ">"):
                    pass
            subject, op = f"$JS.API.CONSUMER.CREATE.{target}", "jetstream"
            detail = await next_event(events, "error", subject)
            # The stream's name as the server sent it (nats-py alone would lower-case it).
            assert f'Permissions Violation for Publish to "{subject}' in detail.detail
        refusal = refusals.seen[0]
        assert (refusal.reason, refusal.op, refusal.exact) == ("permission", op, True)
        assert refusal.subject is not None and refusal.subject.startswith(subject)
        assert refusals.count("permission", op) >= 1 and denied
        [line, *_] = audited(caplog, action=f"nats.{op}", reason="permission", sub=role)
        assert line["code"] == "XY-NATS-008" and line["outcome"] == "denied"
        assert line["subject"] == refusal.subject
        assert nc.is_connected  # a refused operation does not cost the connection
        # ...and what the role may do still works on it.
        async with nc.subscribe(f"_INBOX.{role}.probe") as own:
            nc.publish_nowait(f"_INBOX.{role}.probe", b"still here")
            with trio.fail_after(10):
                assert [m.data for m in await own.receive()] == [b"still here"]


def _refused_at_connect(refusals: Refusals, caplog: pytest.LogCaptureFixture, role: str,
                        reason: str, code: str = "XY-SEC-020") -> None:
    """The refusal was counted under ``reason`` and audited once, naming ``role``."""
    assert [r.reason for r in refusals.seen] == [reason]
    assert refusals.count(reason, "connect") == 1
    [line] = audited(caplog, action="nats.connect")
    assert (line["code"], line["reason"], line["sub"], line["outcome"]) == (
        code, reason, role, "denied")


async def test_an_expired_user_jwt_is_refused(
    secured: EmbeddedNats, chain: Chain, refusals: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    chain.issue_user("gateway", now=now - 120, ttl_s=60)
    with pytest.raises(NatsRefused, match="Authorization Violation") as refused:
        async with as_role(secured, chain, "gateway", refusals=refusals):
            pass
    # The server says only "Authorization Violation"; the creds file says why.
    assert refused.value.reason == "expired"
    _refused_at_connect(refusals, caplog, "gateway", "expired")
    chain.issue_user("gateway", now=now)  # the same key, a fresh JWT
    async with as_role(secured, chain, "gateway") as nc:
        assert nc.is_connected


async def test_a_user_jwt_signed_by_an_unknown_account_is_refused(
    secured: EmbeddedNats, chain: Chain, tmp_path: Path, refusals: Refusals,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = NKey.generate(KeyKind.USER)
    stranger = NKey.generate(KeyKind.ACCOUNT)  # an account no operator of this server signed
    now = time.time()
    path = tmp_path / "stranger.creds"
    path.write_bytes(format_creds(encode(
        "user", subject=user.public, name="gateway", signer=stranger, now=now,
        expires_at=now + 600, nats=user_claims("gateway", chain.layout)), user.seed))
    with pytest.raises(NatsRefused, match="Authorization Violation") as refused:
        async with as_role(secured, chain, "gateway", creds=path, refusals=refusals):
            pass
    assert refused.value.reason == "auth"
    _refused_at_connect(refusals, caplog, "gateway", "auth")
    # The same user key, signed by the chain's account signing key, is admitted.
    signing = NKey.from_seed(chain.paths.seed(f"{chain.account_name}-signing").read_bytes())
    path.write_bytes(format_creds(encode(
        "user", subject=user.public, name="gateway", signer=signing, now=now,
        expires_at=now + 600, nats=user_claims("gateway", chain.layout),
        issuer_account=chain.account_public), user.seed))
    async with as_role(secured, chain, "gateway", creds=path) as nc:
        assert nc.is_connected


async def test_a_revoked_user_is_refused_and_a_new_key_admitted(
    secured: EmbeddedNats, chain: Chain, refusals: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    revoked = chain.revoke("adapter", now=time.time())
    await secured.restart()  # memory resolver: the server learns the account from its config
    with pytest.raises(NatsRefused, match="Authorization Violation") as refused:
        async with as_role(secured, chain, "adapter", refusals=refusals):
            pass
    assert refused.value.reason == "revoked"
    _refused_at_connect(refusals, caplog, "adapter", "revoked")
    async with as_role(secured, chain, "gateway") as nc:  # the other users are untouched
        assert nc.is_connected
    issued = chain.issue_user("adapter", now=time.time(), new_key=True)
    assert issued.user != revoked and revoked in chain.revocations()
    await secured.restart()
    async with as_role(secured, chain, "adapter") as nc:
        assert nc.is_connected


async def test_a_revocation_pushed_to_a_full_resolver_disconnects_the_live_user(
    tmp_path: Path, refusals: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    chain = make_chain(tmp_path / "chain", resolver="full")
    async with embedded_nats(port=0, jetstream=False,
                             config_file=chain.paths.server_config) as server:
        async with as_role(server, chain, "adapter", max_reconnect_attempts=2,
                           refusals=refusals) as nc:
            events = nc.events()
            chain.revoke("adapter", now=time.time())
            results = await push_accounts(chain, server.url, now=time.time())
            assert [r.ok for r in results] == [True, True], results
            await next_event(events, "disconnected")
            await next_event(events, "closed")  # every reconnect refused: revoked
        async with as_role(server, chain, "gateway") as other:
            assert other.is_connected
    # The live user was told, and each refused reconnect is one more refusal.
    assert refusals.seen and {r.op for r in refusals.seen} == {"connect"}
    assert "revoked" in {r.reason for r in refusals.seen}
    assert refusals.count("revoked", "connect") >= 1
    assert audited(caplog, action="nats.connect", reason="revoked", sub="adapter",
                   code="XY-SEC-022")


async def test_plaintext_to_the_tls_only_server_is_refused(
    secured: EmbeddedNats, chain: Chain, refusals: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    # A raw client that speaks plain NATS: the server announces TLS and never serves it.
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(secured.host, secured.port)
        async with stream:
            info = b""
            while not info.endswith(b"\r\n"):
                info += await stream.receive_some(4096)
            assert info.startswith(b"INFO ")
            assert json.loads(info[5:])["tls_required"] is True
            await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            answer = b""
            while chunk := await stream.receive_some(4096):  # until the server hangs up
                answer += chunk
    assert b"PONG" not in answer
    # nats-py upgrades to TLS when the server asks; without the chain's CA it cannot even
    # verify the server: refused at once, counted and audited.
    with pytest.raises(NatsRefused, match="CERTIFICATE_VERIFY_FAILED") as refused:
        async with connect(secured.url, creds=str(chain.creds_file("gateway")),
                           connect_timeout=1.0, principal="gateway", on_refusal=refusals):
            pass
    assert refused.value.reason == "tls" and refused.value.code == "XY-SEC-021"
    _refused_at_connect(refusals, caplog, "gateway", "tls", "XY-SEC-021")


async def _tls_refusal(server: EmbeddedNats, ctx: ssl.SSLContext) -> str:
    """Speak NATS over TLS with ``ctx`` by hand: the server's reason for hanging up, as the
    TLS alert the client receives (nats-py's own retries race it with a broken pipe)."""
    with trio.fail_after(10):
        raw = await trio.open_tcp_stream(server.host, server.port)
        info = b""
        while not info.endswith(b"\r\n"):
            info += await raw.receive_some(4096)
        tls = trio.SSLStream(raw, ctx, server_hostname=server.host)
        try:
            # TLS 1.3: the server judges the client's certificate after the client's side
            # of the handshake; its alert is what we read next (send nothing: a write after
            # the server's close would turn the alert into a reset).
            await tls.do_handshake()
            while await tls.receive_some(4096):
                pass
        except trio.BrokenResourceError as exc:
            return str(exc.__cause__)
        finally:
            await tls.aclose()
    raise AssertionError("the server admitted the client")


@pytest.mark.parametrize("presented", ["another-ca", "none"])
async def test_a_client_certificate_from_another_ca_or_none_is_refused(
    secured: EmbeddedNats, chain: Chain, tmp_path: Path, presented: str, refusals: Refusals,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    other = tmp_path / "other-ca"
    other.mkdir()
    ca = make_ca(CertFiles(other / "ca.pem", other / "ca.key"), name="another CA", now=now)
    leaf = issue_certificate(ca, CertFiles(other / "gw.pem", other / "gw.key"),
                             common_name="gateway", client=True, now=now)
    ctx = client_tls_context(chain.paths.ca.cert, leaf if presented == "another-ca" else None)
    alert = "UNKNOWN_CA" if presented == "another-ca" else "CERTIFICATE_REQUIRED"
    assert alert in await _tls_refusal(secured, ctx)  # the server's own words
    with pytest.raises(NatsRefused, match=alert) as refused:
        async with connect(secured.url, creds=str(chain.creds_file("gateway")),
                           connect_timeout=1.0, tls=ctx, principal="gateway",
                           on_refusal=refusals):
            pass
    assert refused.value.reason == "tls"
    _refused_at_connect(refusals, caplog, "gateway", "tls", "XY-SEC-021")
    async with as_role(secured, chain, "gateway") as nc:
        assert nc.is_connected


# --------------------------------------------------------------------------- rotation


async def test_a_live_connection_signs_in_again_with_the_rotated_creds_file(
    secured: EmbeddedNats, chain: Chain
) -> None:
    """nats-py reads a creds *path* at every (re)connect: rotate the file (a new key; the old
    one revoked), bring the server back, and the same connection is admitted with the new
    key — it could not have been with the old one."""
    async with as_role(secured, chain, "gateway") as nc:
        events = nc.events()
        old = chain.user_public("gateway")
        issued = chain.issue_user("gateway", now=time.time(), new_key=True)
        assert issued.revoked == old
        await secured.restart()
        await next_event(events, "reconnected")
        async with nc.subscribe("xy.md.>") as sub, as_role(secured, chain, "aggregator") as agg:
            agg.publish_nowait("xy.md.tick.eq", b"after rotation")
            with trio.fail_after(10):
                assert [m.data for m in await sub.receive()] == [b"after rotation"]
        assert nc.statistics().reconnects == 1


async def test_a_short_lived_jwt_expiring_closes_a_connection_that_did_not_sign_in_again(
    secured: EmbeddedNats, chain: Chain, refusals: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    """Why :func:`follow_creds` exists: at expiry the server closes the connection with
    ``User Authentication Expired`` and nats-py gives up for good — a creds file rotated in
    the meantime is never read."""
    chain.issue_user("reader", now=time.time(), ttl_s=2)
    async with as_role(secured, chain, "reader", refusals=refusals) as nc:
        events = nc.events()
        chain.issue_user("reader", now=time.time())
        await next_event(events, "closed")
        assert nc.closed
    assert refusals.seen == [Refusal("expired", "connect", None, "User Authentication Expired")]
    assert refusals.count("expired", "connect") == 1
    [line] = audited(caplog, action="nats.connect")
    assert (line["code"], line["reason"], line["sub"]) == ("XY-SEC-022", "expired", "reader")


async def test_a_process_following_its_creds_file_outlives_its_first_jwt(
    secured: EmbeddedNats, chain: Chain
) -> None:
    """Rotated before expiry, the file is picked up: the connection signs in again with the
    fresh JWT and is still there (and still receiving) once the first JWT has expired."""
    first = chain.issue_user("reader", now=time.time(), ttl_s=3)
    async with as_role(secured, chain, "reader") as nc, trio.open_nursery() as nursery:
        events = nc.events()
        await nursery.start(partial(follow_creds, chain.creds_file("reader"), nc, poll_s=0.05))
        chain.issue_user("reader", now=time.time())  # what a rotation job does
        await next_event(events, "reconnected")
        # Watch past the first JWT's expiry: the connection is never dropped.
        with trio.move_on_after(first.expires_at - time.time() + 1.5):
            async for event in events:
                raise AssertionError(f"the connection changed state: {event}")
        async with nc.subscribe("xy.md.>") as sub, as_role(secured, chain, "aggregator") as agg:
            agg.publish_nowait("xy.md.tick.eq", b"still reading")
            with trio.fail_after(10):
                assert [m.data for m in await sub.receive()] == [b"still reading"]
        assert nc.statistics().reconnects == 1
        nursery.cancel_scope.cancel()
