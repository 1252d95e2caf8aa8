"""The gateway over TLS (WSS), as configs/prod.toml runs it."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trio
import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gw_support import Client, Keys

import xypipe
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "gw.crt.pem", tmp / "gw.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_wss_handshake_and_hello_over_tls(nats_server, keys: Keys, tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    config = xypipe.parse_config({
        "nats": {"url": nats_server.url},
        "http": {"port": 0, "tls": {"cert": str(cert), "key": str(key)}},
        "pipelines": {"gateway": {"stages": [
            {"use": "nats_source", "name": "md", "subjects": ["xy.md.>"]},
            {"use": "gateway", "public_key": str(keys.public_path),
             "allowed_origins": ["https://md.example.com"], "issuer": DEV_ISSUER,
             "audience": DEV_AUDIENCE},
        ]}},
    }, "tls.toml")
    runner = xypipe.Runner(config)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        with trio.fail_after(10):
            for s in runner.pipelines[0].stages:
                await s.ctx.wait_ready()
        assert runner.http is not None
        stream = await trio.open_ssl_over_tcp_stream("localhost", runner.http.port,
                                                     ssl_context=client_ctx)
        try:
            async with trio.open_nursery() as inner:
                ws = await trio_websocket.wrap_client_stream(
                    inner, stream, "localhost", "/ws",
                    extra_headers=[(b"origin", b"https://md.example.com")])
                c = Client(ws)
                reply = await c.hello(keys.token("tls-user"))
                assert reply.welcome.principal == "tls-user"
                await ws.aclose()
                inner.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)
        runner.stop()
