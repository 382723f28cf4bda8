"""Certificates for TLS tests, made at test time with ``cryptography``.

:func:`make_tls_files` writes, into one folder:

- a CA (``ca.pem``) and, signed by it, a server certificate for ``127.0.0.1`` and
  ``localhost`` (``server.pem``/``server.key``; usable as a client certificate too, as
  the cluster uses one certificate per process) and a client certificate
  (``client.pem``/``client.key``);
- an unrelated CA (``rogue-ca.pem``) and a client certificate it signed
  (``rogue-client.pem``/``rogue-client.key``): an attacker's.

Keys are EC P-256 (fast to make), written 0600. The ``tls_files`` fixture makes a fresh
set in the test's tmp_path.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "client_context", "make_tls_files", "tls_files"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    server: bool = False,
) -> x509.Certificate:
    """A CA certificate (no ``issuer``: self-signed) or a leaf signed by ``issuer``."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        return builder.sign(key, hashes.SHA256())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
        critical=False,
    )
    return builder.sign(issuer[1], hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return path


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, rogue_key, server_key, client_key, rogue_client_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(5)
    )
    ca = _certificate("lucid test CA", ca_key)
    rogue = _certificate("lucid test CA", rogue_key)  # the same name, another key
    return TlsFiles(
        ca=_write_cert(folder / "ca.pem", ca),
        server_cert=_write_cert(
            folder / "server.pem",
            _certificate("lucid test server", server_key, issuer=(ca, ca_key), server=True),
        ),
        server_key=_write_key(folder / "server.key", server_key),
        client_cert=_write_cert(
            folder / "client.pem",
            _certificate("lucid test client", client_key, issuer=(ca, ca_key)),
        ),
        client_key=_write_key(folder / "client.key", client_key),
        rogue_ca=_write_cert(folder / "rogue-ca.pem", rogue),
        rogue_client_cert=_write_cert(
            folder / "rogue-client.pem",
            _certificate("lucid test client", rogue_client_key, issuer=(rogue, rogue_key)),
        ),
        rogue_client_key=_write_key(folder / "rogue-client.key", rogue_client_key),
    )


def client_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """What an HTTPS client trusting ``ca`` (None: the system's roots) uses, presenting
    ``cert``/``key`` when given (for mutual TLS)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")
