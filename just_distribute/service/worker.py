"""``just-distribute worker ADDRESS --workers N``: join more workers to a function service.

Each worker is a dask worker process with one thread (one function at a time), kept alive
by a nanny that restarts it if it dies. They serve until Ctrl-C or SIGTERM, then stop; none
is left behind.

The workers (and their nannies) listen on the one interface that reaches the scheduler,
never on every interface unless ``--host`` says so: whoever reaches a worker's port can
make it run code. Before anything starts, the scheduler is asked who it is, within
``--connect-timeout``, so that a wrong address, a port that is no scheduler or a refused
certificate is one line at once, not a long retry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from just_distribute.config import usable_cpus
from just_distribute.errors import MissingExtraError
from just_distribute.service import tls as _tls
from just_distribute.service.reach import check_address, probe, route_to
from just_distribute.service.serve import (
    check_can_listen,
    given_tls_files,
    insecure_warning,
    quiet_timers,
    worker_count,
)

__all__ = ["configure", "main"]

log = logging.getLogger("just_distribute")


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``just-distribute worker``."""
    parser.add_argument("address", help="the scheduler address, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--workers", "-n", type=worker_count, default=None,
                        help="worker processes, one thread each (default: usable CPUs)")
    parser.add_argument("--host", default=None,
                        help="interface the workers listen on (default: the one that "
                             "reaches the scheduler)")
    parser.add_argument("--name", default=None,
                        help="worker name prefix (default: HOSTNAME-PID); workers are "
                             "PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--tls", dest="tls_dir", default=None,
                        help="identity folder with ca.pem, cert.pem, key.pem (from `tls issue "
                             "--role worker`, or the folder of `cluster --tls`)")
    parser.add_argument("--tls-ca", help="CA certificate file")
    parser.add_argument("--tls-cert", help="certificate file")
    parser.add_argument("--tls-key", help="private key file")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for the scheduler to answer (default 10)")


def _tls_files(args: argparse.Namespace) -> _tls.TlsFiles | None:
    files = given_tls_files(args)
    if files is not None:
        return files
    if args.tls_dir:
        return _tls.resolve(args.tls_dir, role="worker")
    if args.address.startswith("tls://") and os.environ.get("JUST_DISTRIBUTE_TLS"):
        return _tls.resolve(os.environ["JUST_DISTRIBUTE_TLS"], role="worker")
    return None


async def _run(
    args: argparse.Namespace, address: str, host: str, security: object, got: list[int]
) -> None:
    from distributed import Nanny

    prefix = args.name or f"{socket.gethostname()}-{os.getpid()}"
    count = args.workers or usable_cpus()
    nannies = [
        Nanny(
            address, nthreads=1, name=f"{prefix}-{i}", host=host, security=security,
            dashboard=False, silence_logs=logging.ERROR,
        )
        for i in range(count)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        got.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await asyncio.gather(*(n.start() for n in nannies))  # type: ignore[no-untyped-call]
        print(f"joined {count} workers ({prefix}-0 ... {prefix}-{count - 1}) to {address}, "
              f"listening on {host}", flush=True)
        waits = [
            asyncio.ensure_future(n.finished())  # type: ignore[no-untyped-call]
            for n in nannies
        ]
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        for nanny in nannies:
            with contextlib.suppress(Exception):
                await nanny.close(timeout=20)


def main(args: argparse.Namespace) -> int:
    """Run ``just-distribute worker``: serve until Ctrl-C or SIGTERM."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        print(f"just-distribute worker: {MissingExtraError('workers', 'cluster', 'distributed')}",
              file=sys.stderr)
        return 2
    from just_distribute.errors import ClusterUnreachableError

    try:
        files = _tls_files(args)
        security = _tls.security(files) if files is not None else None
        address = check_address(args.address, security is not None)
        probe(address, security, args.connect_timeout)
        host = args.host or route_to(address)
        check_can_listen(host, 0, "worker")
    except (ValueError, FileNotFoundError, TypeError, OSError, ClusterUnreachableError) as exc:
        print(f"just-distribute worker: {exc}", file=sys.stderr)
        return 2
    warning = insecure_warning(host, files)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    got: list[int] = []
    try:
        # For the workers' whole life: a nanny hands its config to every worker it
        # (re)starts, and dask's context exit would reset the copy it holds.
        with quiet_timers():
            asyncio.run(_run(args, address, host, security, got))
    except OSError as exc:
        print(f"just-distribute worker: cannot join {address}: {exc}", file=sys.stderr)
        return 2
    print("just-distribute: workers stopped", flush=True)
    return 130 if signal.SIGINT in got else 0
