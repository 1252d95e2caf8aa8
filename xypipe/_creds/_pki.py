"""X.509 for mutual TLS to NATS, and the browser-token key pair, with ``cryptography``.

``xypipe creds init`` makes a development CA and, signed by it, a server certificate (for the
host names the server is reached by) and one client certificate per role: the server requires
a client certificate from this CA (``verify: true``) before any NATS credential is looked at.
A deployment with its own PKI replaces these files; only their paths are configured.

Keys are ECDSA P-256 (small, fast, what every TLS stack accepts). Private keys are written
0600. Times come from the caller.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xypipe._creds._files import write_atomic
from xypipe._errors import TlsMaterialError
from xypipe._gateway._tokens import generate_ed25519_keypair

__all__ = [
    "CertFiles",
    "client_tls_context",
    "issue_certificate",
    "make_ca",
    "write_token_keypair",
]

CA_DAYS = 3650
LEAF_DAYS = 397


@attrs.frozen
class CertFiles:
    """A certificate and its private key on disk (PEM)."""

    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(files: CertFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    write_atomic(files.key, _pem_key(key))
    write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _load(files: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsMaterialError(f"{files.cert} / {files.key}: cannot read the certificate and "
                               f"its key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsMaterialError(f"{files.key}: expected an EC private key")
    return cert, key


def make_ca(files: CertFiles, *, name: str, now: datetime.datetime) -> CertFiles:
    """A self-signed CA certificate that may sign server and client certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xypipe"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files, cert, key)
    return files


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_certificate(ca: CertFiles, files: CertFiles, *, common_name: str,
                      hosts: tuple[str, ...] = (), client: bool,
                      now: datetime.datetime) -> CertFiles:
    """A leaf certificate signed by ``ca``: a server's (``hosts`` in its SAN) or a client's."""
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xypipe"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    _write(files, builder.sign(ca_key, hashes.SHA256()), key)
    return files


def client_tls_context(ca_file: Path, cert: CertFiles | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca_file`` only and presents ``cert`` (mTLS).

    Host names are checked against the server certificate (``localhost``/``127.0.0.1`` for
    the development chain). Raises :class:`TlsMaterialError` naming the unreadable file.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsMaterialError(f"{ca_file}: cannot load the CA certificate: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            ctx.load_cert_chain(str(cert.cert), str(cert.key))
        except (OSError, ssl.SSLError) as exc:
            raise TlsMaterialError(f"{cert.cert} / {cert.key}: cannot load the client "
                                   f"certificate and key: {exc}") from None
    return ctx


def write_token_keypair(private: Path, public: Path) -> None:
    """The Ed25519 key pair browser tokens are signed with (the gateway's ``public_key``)."""
    key, pub = generate_ed25519_keypair()
    write_atomic(private, key)
    write_atomic(public, pub, mode=0o644)
