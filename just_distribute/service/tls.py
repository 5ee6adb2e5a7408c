"""TLS for the function service and its clients: certificate files, made or given.

Dask checks certificates in both directions: the scheduler and the workers accept only a
peer whose certificate is signed by the service's CA (and not on its revocation list,
``crl.pem``, when the folder holds one). Identities are per role (see
:mod:`.identities`): ``--tls`` on ``just-distribute cluster`` makes, in ``--tls-dir``::

    ca/         the CA, its key and crl.pem        stays on this machine
    scheduler/  the scheduler's identity           used by the service
    worker/     an identity for worker hosts       copy to them: `worker ... --tls DIR`
    client/     an identity for clients            copy to them: tls=DIR

For more than a quick start, issue one identity per worker host and per client with
``just-distribute tls issue``, so that one can be refused alone. Clients name theirs with
``tls=`` (or ``JUST_DISTRIBUTE_TLS``):

- a directory holding ``ca.pem``, ``cert.pem`` and ``key.pem`` (an identity folder), or one
  made by ``--tls`` (its ``client/`` folder is used),
- a :class:`TlsFiles` or a plain ``(ca, cert, key)`` tuple of file paths,
- a ``distributed.Security`` object, used as it is.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from just_distribute.service import identities

__all__ = ["TlsFiles", "generate", "resolve", "security"]

CA_FILE, CERT_FILE, KEY_FILE, CRL_FILE = "ca.pem", "cert.pem", "key.pem", "crl.pem"


class TlsFiles(NamedTuple):
    """Paths of the CA certificate, a certificate signed by it and that certificate's key."""

    ca: str
    cert: str
    key: str


def generate(directory: str | os.PathLike[str], hosts: Iterable[str] = ()) -> TlsFiles:
    """Make a private CA and one identity per role in ``directory``; reuse existing ones.

    Existing files are kept, so that restarting the service does not lock out clients that
    already hold a certificate. The CA key stays in ``directory/ca``; the ``scheduler``,
    ``worker`` and ``client`` folders hold no CA key.

    Args:
        directory: where to write (see the module docstring for the layout).
        hosts: extra names or IP addresses the scheduler and workers serve on (127.0.0.1,
            localhost and this machine's name are always in their certificates).

    Returns:
        The scheduler's files.

    Raises:
        MissingExtraError: the ``cryptography`` package is not installed.
    """
    folder = Path(directory)
    scheduler = TlsFiles(*(str(folder / "scheduler" / n) for n in (CA_FILE, CERT_FILE,
                                                                   KEY_FILE)))
    if all(Path(f).is_file() for f in scheduler):
        return scheduler
    folder.mkdir(parents=True, exist_ok=True)
    ca = identities.make_ca(folder / "ca")
    extra = list(hosts)
    for role in ("scheduler", "worker", "client"):
        identities.issue(ca, folder / role, role, role, extra if role != "client" else ())
    return scheduler


def resolve(tls: Any, role: str = "client") -> TlsFiles | None:
    """Turn a ``tls=`` value (directory, ``(ca, cert, key)`` tuple, None) into checked paths.

    ``role`` picks the identity in a directory made by ``--tls`` (client, worker, scheduler).

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
                f"tls={str(tls)!r} is not a directory; pass an identity folder (from "
                f"`just-distribute tls issue`, it holds {CA_FILE}, {CERT_FILE}, {KEY_FILE}) "
                f"or the directory written by `just-distribute cluster --tls`"
            )
        if not (folder / CERT_FILE).is_file() and (folder / role / CERT_FILE).is_file():
            folder = folder / role  # the --tls layout: this role's own identity
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
    crl = Path(files.ca).parent / CRL_FILE
    return _security_class()(
        tls_ca_file=files.ca,
        tls_client_cert=files.cert, tls_client_key=files.key,
        tls_scheduler_cert=files.cert, tls_scheduler_key=files.key,
        tls_worker_cert=files.cert, tls_worker_key=files.key,
        require_encryption=True,
    ).with_crl(str(crl) if crl.is_file() else None)


_SECURITY: Any = None


def __getattr__(name: str) -> Any:
    # A worker process unpickling its Security finds the class here (made on first use, so
    # that importing this module does not import dask).
    if name == "RevocationSecurity":
        return _security_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _security_class() -> Any:
    """``distributed.Security`` that also checks peers against the CA's revocation list."""
    global _SECURITY
    if _SECURITY is None:
        from distributed.security import Security

        class RevocationSecurity(Security):
            """Security whose TLS contexts refuse certificates listed in ``crl_file``."""

            crl_file: str | None = None

            def with_crl(self, crl_file: str | None) -> Any:
                self.crl_file = crl_file
                return self

            def _get_tls_context(self, tls: Any, purpose: Any) -> Any:
                ctx = super()._get_tls_context(tls, purpose)  # type: ignore[no-untyped-call]
                if ctx is not None and self.crl_file:
                    ctx.load_verify_locations(self.crl_file)
                    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
                return ctx

        RevocationSecurity.__module__ = __name__
        RevocationSecurity.__qualname__ = "RevocationSecurity"
        _SECURITY = RevocationSecurity
    return _SECURITY
