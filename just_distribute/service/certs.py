"""Certificate primitives for the service's TLS: a private CA, identities it signs, its CRL.

Used by :mod:`.tls` (the ``cluster --tls`` quick start) and :mod:`.identities` (the
``just-distribute tls`` command). Needs the ``cryptography`` package.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["ROLES", "build_crl", "load_ca", "new_ca", "new_identity", "pem", "write_file"]

#: What each role's certificate may do: servers (scheduler, workers) accept connections
#: and make them; a client only makes them.
ROLES = ("scheduler", "worker", "client")
_YEARS = datetime.timedelta(days=3650)


def _crypto() -> Any:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        from just_distribute.errors import MissingExtraError

        raise MissingExtraError("making TLS certificates", "cluster", "cryptography") from None
    from cryptography import x509

    return x509


def write_file(path: Path, data: bytes, secret: bool) -> None:
    """Write ``data``; a secret is 0600 even when the file already existed (chmod, not umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600 if secret else 0o644)
        out.write(data)


def _name(common: str) -> Any:
    x509 = _crypto()
    from cryptography.x509.oid import NameOID

    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "just-distribute"),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])


def new_ca() -> tuple[Any, Any]:
    """A fresh CA: its private key and its self-signed certificate."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("just-distribute private CA")
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + _YEARS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_identity(
    ca_key: Any, ca_cert: Any, common: str, role: str, hosts: Iterable[str] = ()
) -> tuple[Any, Any]:
    """A key and a certificate for one scheduler, worker host or client, signed by the CA."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if role not in ROLES:
        raise ValueError(f"role {role!r}: give one of {', '.join(ROLES)}")
    names: list[Any] = [x509.DNSName("localhost")]
    seen = {"localhost"}
    for host in ["127.0.0.1", socket.gethostname(), *hosts]:
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role != "client":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(f"{role}:{common}"))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + _YEARS)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def build_crl(ca_key: Any, ca_cert: Any, serials: Iterable[int]) -> bytes:
    """The CA's revocation list (PEM) refusing the certificates with these serial numbers."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5)).next_update(now + _YEARS)
    )
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    return bytes(crl.public_bytes(serialization.Encoding.PEM))


def pem(obj: Any) -> bytes:
    """A certificate or a private key as PEM bytes (keys unencrypted: files are 0600)."""
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "private_bytes"):
        return bytes(obj.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    return bytes(obj.public_bytes(serialization.Encoding.PEM))


def load_ca(folder: Path) -> tuple[Any, Any]:
    """The CA key and certificate kept in ``folder`` (``ca-key.pem``, ``ca.pem``)."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization

    key_file, cert_file = folder / "ca-key.pem", folder / "ca.pem"
    if not key_file.is_file():
        raise FileNotFoundError(
            f"{folder} holds no CA key (ca-key.pem): give the CA folder made by "
            f"`just-distribute tls ca`, on the machine where it was made")
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
