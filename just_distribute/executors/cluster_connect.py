"""Reaching a dask scheduler with a bound on every wait; the embedded cluster; how a lost
task is reported.

dask's own ``Client(address, timeout=...)`` bounds the TCP connect, not what follows: a port
that accepts connections but is no scheduler (a dashboard, any HTTP server) can keep it
waiting for minutes, and a malformed address fails deep inside with a raw ``ValueError``
and a client half made (which then delays the interpreter's exit). So before a ``Client``
is made the address is checked and the scheduler is asked who it is within
``connect_timeout`` (:mod:`just_distribute.service.reach`, shared with ``just-distribute
worker``), and the workers' versions are compared with the client's. The same probe,
repeated while chunks are out, notices a scheduler that stops answering or goes away.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from just_distribute.config import resolve_options, usable_cpus
from just_distribute.errors import (
    ClusterUnreachableError,
    JustDistributeError,
    MissingExtraError,
    WorkerLostError,
)
from just_distribute.executors import cluster_code as _code
from just_distribute.executors.cluster_worker import importable
from just_distribute.service import tls as _tls
from just_distribute.service.launch import start_service
from just_distribute.service.reach import check_address, probe

__all__ = ["asker", "check_address", "close_quietly", "connect", "embedded_service", "probe",
           "ship", "stop_embedded", "task_error"]

log = logging.getLogger("just_distribute")

def import_distributed() -> Any:
    """dask.distributed, or the error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("job='cluster'", "cluster", "distributed") from None
    return distributed


def connect(address: str | None, tls: Any, timeout: float, workers: int | None) -> Any:
    """A dask ``Client`` of the scheduler at ``address`` (None: the embedded cluster).

    The versions of the client and of the workers present are compared first.

    Raises:
        ValueError: a malformed address.
        ClusterUnreachableError: no scheduler answered in time, or TLS trouble.
        VersionMismatchError: a worker runs other versions of Python or the pickle libraries.
    """
    distributed = import_distributed()
    if address is None:
        service = embedded_service(workers or usable_cpus())
        address, security = service.address, None
    else:
        security = _tls.security(tls)
        address = check_address(address, security is not None)
        if security is None and address.startswith("tls://"):
            raise ClusterUnreachableError(
                f"the dask scheduler at {address} serves TLS and this client has no "
                f"certificate: pass tls= (a client folder from `just-distribute tls "
                f"client`, or ca/cert/key files) or set JUST_DISTRIBUTE_TLS"
            )
        try:
            probe(address, security, timeout)
        except ClusterUnreachableError as exc:
            tls_trouble = address.startswith("tls://") or "certificate" in str(exc).lower()
            hint = (
                " The scheduler serves TLS and may have refused this client: pass tls= with "
                "a certificate signed by its CA, or set JUST_DISTRIBUTE_TLS."
                if tls_trouble
                else " Is it running? Start one with `just-distribute cluster`, or fix "
                "address= (or JUST_DISTRIBUTE_ADDRESS); a TLS service needs its tls:// "
                "address and tls=."
            )
            raise ClusterUnreachableError(f"{exc}.{hint}") from exc.__cause__
    try:
        client = distributed.Client(address, timeout=timeout, security=security,
                                    set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnreachableError(
            f"cannot reach the dask scheduler at {address} (connect_timeout={timeout}s): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        there = client.sync(client._run, _code.local_versions, on_error="return",
                            callback_timeout=timeout)
    except (TimeoutError, OSError) as exc:  # a stopped worker must not hold the client
        log.warning("job 'cluster': could not ask the workers of %s their versions: %s",
                    address, exc)
    else:
        try:
            _code.check_versions(address, _code.local_versions(), there)
        except BaseException:
            client.close(timeout=5)
            raise
    log.info("job 'cluster': connected to the dask scheduler at %s", address)
    return client


#: The embedded clusters of this process, by worker count: a process tree that takes
#: seconds to start, shared by every executor (decorator, Pool) that has no ``address``.
_services: dict[int, Any] = {}
_services_lock = threading.Lock()


def embedded_service(count: int) -> Any:
    """The embedded cluster of ``count`` workers, started on first use."""
    with _services_lock:
        service = _services.get(count)
        if service is None or not service.running:
            if not _services:
                atexit.register(stop_embedded)
            service = _services[count] = start_service(count)
            log.info(
                "embedded dask cluster: %d workers at %s, dashboard %s",
                count, service.address, service.dashboard_url or "off",
            )
        return service


def stop_embedded() -> None:
    """Stop the embedded clusters this process started (at exit, or by hand)."""
    with _services_lock:
        services = list(_services.values())
        _services.clear()
    for service in services:
        service.stop()


def asker(client: Callable[[], Any], timeout: float) -> _code.Asker:
    """Asks the workers of ``client()`` which modules they can import (see cluster_code)."""

    def ask(names: set[str]) -> set[str]:
        dask_client = client()
        try:
            there = dask_client.sync(dask_client._run, importable, sorted(names),
                                     on_error="return", callback_timeout=timeout)
        except Exception:  # no answer: by value is right everywhere
            return set()
        found = [set(v) for v in there.values() if isinstance(v, list)]
        return set.intersection(*found) if found else set()

    return ask


def task_error(value: BaseException, name: str, scheduler: str | None,
               closed: bool) -> BaseException:
    """The error for a chunk whose dask task ended with ``value`` instead of an outcome."""
    kind = type(value).__name__
    if kind == "KilledWorker":
        return WorkerLostError(
            f"dask workers died while running a chunk of {name}() (dask retried it on "
            f"other workers and gave up: {value}). A call may be crashing its worker "
            f"(out of memory? native code?); see the workers' logs."
        )
    if isinstance(value, Exception) and "Cancelled" not in kind:
        return value
    if not closed:
        return ClusterUnreachableError(
            f"the dask scheduler at {scheduler or 'the given address'} went away "
            f"or restarted while a chunk of {name}() was out ({kind}: {value})"
        )
    return JustDistributeError(
        f"the cluster dropped a chunk of {name}() ({kind}): the client was closed")


def close_quietly(client: Any, pending: list[Any]) -> None:
    """Close a dask client, cancelling ``pending`` first, without dask's closing chatter."""
    # Closing can race dask's own batched sends, which dask reports at INFO level on
    # standard error ("Batched Comm Closed"): expected here, so kept quiet.
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    dask_log.setLevel(max(level, logging.WARNING))
    try:
        # Abandoned tasks still running would call back into a closed client.
        if pending:
            client.cancel(pending)
        client.close(timeout=10)
    except Exception as exc:  # best effort: the cluster may be gone already
        log.debug("closing the dask client: %s", exc)
    finally:
        dask_log.setLevel(level)


def ship(path: str | os.PathLike[str], *, address: str | None = None, tls: Any = None,
         workers: int | None = None) -> set[str]:
    """Send a local package or folder to every worker of a cluster, present and future.

    For code that imports its local helpers at module level (``import helpers``): after
    this call the workers import them as the caller does.

    Args:
        path: a package folder (with ``__init__.py``), a folder of modules or a ``.py`` file.
        address: the scheduler (default: ``JUST_DISTRIBUTE_ADDRESS``, else the embedded
            cluster), as for ``job="cluster"``.
        tls: TLS settings for ``address``.
        workers: the size of the embedded cluster, when that is the one meant.

    Returns:
        The top-level module names now importable on the workers.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ClusterUnreachableError: no scheduler answered.
    """
    settings: dict[str, Any] = {"job": "cluster", "address": address, "tls": tls,
                                "workers": workers}
    options = resolve_options({k: v for k, v in settings.items() if v is not None})
    client = connect(options.address, options.tls, options.connect_timeout, options.workers)
    try:
        return _code.ship_to(client, path)
    finally:
        close_quietly(client, [])
