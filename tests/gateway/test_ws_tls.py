"""The gateway over TLS (WSS), as configs/prod.toml runs it."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gw_support import Keys

import xypipe
import xypipe.client
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe.client import GatewayUnreachable


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
        url = f"wss://localhost:{runner.http.port}/ws"
        async with xypipe.client.connect(url, token=keys.token("tls-user"),
                                         ssl_context=client_ctx,
                                         origin="https://md.example.com") as c:
            assert c.principal == "tls-user"
        # A client that does not trust the gateway's certificate never says hello.
        with pytest.raises(GatewayUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            async with xypipe.client.connect(url, token=keys.token("tls-user")):
                pytest.fail("trusted a self-signed certificate")
        runner.stop()
