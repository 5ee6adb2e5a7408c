"""TLS for the function service and its clients: certificate files, made or given.

Dask checks certificates in both directions: the scheduler and the workers accept only a
peer whose certificate is signed by the service's CA. ``--tls`` makes a private CA and one
certificate for a quick start; the same files then serve the scheduler, the workers and every
client. Clients name them with ``tls=`` (or ``JUST_DISTRIBUTE_TLS``):

- a directory holding ``ca.pem``, ``cert.pem`` and ``key.pem`` (what ``--tls`` writes),
- a :class:`TlsFiles` or a plain ``(ca, cert, key)`` tuple of file paths,
- a ``distributed.Security`` object, used as it is.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["TlsFiles", "generate", "resolve", "security"]

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"


class TlsFiles(NamedTuple):
    """Paths of the CA certificate, a certificate signed by it and that certificate's key."""

    ca: str
    cert: str
    key: str


def _missing_cryptography() -> ImportError:
    from just_distribute.errors import MissingExtraError

    return MissingExtraError("generating TLS certificates (--tls)", "cluster", "cryptography")


def generate(directory: str | os.PathLike[str], hosts: Iterable[str] = ()) -> TlsFiles:
    """Make a private CA and one certificate signed by it in ``directory``; reuse existing ones.

    Existing files are kept, so that restarting the service does not lock out clients that
    already hold the certificate.

    Args:
        directory: where to write ``ca.pem``, ``cert.pem``, ``key.pem`` (and ``ca-key.pem``).
        hosts: extra names or IP addresses for the certificate (127.0.0.1, localhost and this
            machine's name are always in it).

    Returns:
        The paths of the files.

    Raises:
        MissingExtraError: the ``cryptography`` package is not installed.
    """
    folder = Path(directory)
    files = TlsFiles(*(str(folder / n) for n in (CA_FILE, CERT_FILE, KEY_FILE)))
    if all(Path(f).is_file() for f in files):
        return files
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise _missing_cryptography() from None

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)

    def name(common: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "just-distribute"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("just-distribute private CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    seen = {"localhost"}
    for host in ["127.0.0.1", socket.gethostname(), *hosts]:
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("just-distribute service"))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    plain_key = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8

    def write(path: Path, data: bytes, secret: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)

    write(folder / "ca-key.pem", ca_key.private_bytes(pem, pkcs8, plain_key), True)
    write(folder / CA_FILE, ca_cert.public_bytes(pem), False)
    write(folder / KEY_FILE, key.private_bytes(pem, pkcs8, plain_key), True)
    write(folder / CERT_FILE, cert.public_bytes(pem), False)
    return files


def resolve(tls: Any) -> TlsFiles | None:
    """Turn a ``tls=`` value (directory, ``(ca, cert, key)`` tuple, None) into checked paths.

    Raises:
        TypeError: an unsupported kind of value.
        FileNotFoundError: a named file does not exist.
    """
    if tls is None or tls is False:
        return None
    if isinstance(tls, TlsFiles):
        files = tls
    elif isinstance(tls, (str, os.PathLike)):
        folder = Path(tls)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"tls={str(tls)!r} is not a directory; pass the directory written by "
                f"`just-distribute cluster --tls` (it holds {CA_FILE}, {CERT_FILE}, {KEY_FILE})"
            )
        files = TlsFiles(*(str(folder / n) for n in (CA_FILE, CERT_FILE, KEY_FILE)))
    elif isinstance(tls, tuple) and len(tls) == 3:
        files = TlsFiles(*(str(p) for p in tls))
    else:
        raise TypeError(
            "tls= takes a directory (from `just-distribute cluster --tls`), a (ca, cert, key) "
            f"tuple of file paths, or a distributed.Security; got {type(tls).__name__}"
        )
    for role, path in files._asdict().items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"tls {role} file {path!r} does not exist")
    return files


def security(tls: Any) -> Any:
    """A ``distributed.Security`` for a ``tls=`` value (None when TLS is off).

    A ``distributed.Security`` passes through unchanged.
    """
    if tls is None or tls is False:
        return None
    if type(tls).__name__ == "Security" and type(tls).__module__.startswith("distributed"):
        return tls
    files = resolve(tls)
    assert files is not None
    from distributed.security import Security

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=files.ca,
        tls_client_cert=files.cert, tls_client_key=files.key,
        tls_scheduler_cert=files.cert, tls_scheduler_key=files.key,
        tls_worker_cert=files.cert, tls_worker_key=files.key,
        require_encryption=True,
    )
