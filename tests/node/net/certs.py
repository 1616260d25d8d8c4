"""Real X.509 certificates for TLS tests, made with the ``cryptography`` package:
a CA, a server certificate it signs for 127.0.0.1 and localhost, and a
self-signed one. Written as PEM files in a test's folder."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.net.tls import fingerprint, server_context


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the certificate's DER, hex

    def context(self) -> ssl.SSLContext:
        return server_context(self.cert, self.key)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertFiles:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertFiles(
        cert_path, key_path, fingerprint(cert.public_bytes(serialization.Encoding.DER))
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


_LOOPBACK_NAMES = x509.SubjectAlternativeName(
    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
)


def make_ca(folder: Path, stem: str = "ca") -> tuple[CertFiles, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"xln test {stem}")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key), key


def make_signed(
    folder: Path, ca: CertFiles, ca_key: ec.EllipticCurvePrivateKey, stem: str = "server"
) -> CertFiles:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert = (
        _builder(_name("127.0.0.1"), ca_cert.subject, key.public_key())
        .add_extension(_LOOPBACK_NAMES, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key)


def make_self_signed(folder: Path, stem: str = "self") -> CertFiles:
    """A self-signed certificate for 127.0.0.1 and localhost (a private hub's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("127.0.0.1")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(_LOOPBACK_NAMES, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key)
