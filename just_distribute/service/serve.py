"""The function service itself: ``just-distribute cluster`` (see also :mod:`.launch`).

The service is a dask scheduler and N dask workers, each a separate process with one thread,
so that each runs one function at a time. The scheduler (and the nannies that restart a
worker process that dies) lives in the service's own process; the workers are its children.
It serves until Ctrl-C or SIGTERM (or until the process that started it with
:func:`start_service` disappears), then stops every process it started.

Clients reach it with ``@distribute(job="cluster", address=...)``, ``compute_this`` or any
dask ``Client``. The dashboard and Prometheus metrics (``/metrics``) share one HTTP port.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from just_distribute._pids import alive
from just_distribute.config import usable_cpus
from just_distribute.errors import MissingExtraError
from just_distribute.service import tls as _tls
from just_distribute.service.launch import _READY, _START_TIMEOUT

__all__ = ["QUIET_TIMERS", "configure", "insecure_warning", "main", "quiet_timers", "serve"]

log = logging.getLogger("just_distribute")

#: dask's periodic timers that the service runs less often than dask's defaults do. With
#: the defaults (an event-loop health check every 20 ms, a stack sample every 10 ms, memory
#: every 100 ms, system figures every 500 ms) an idle worker process costs about 2.5% of a
#: core and the scheduler with its nannies more: 32 idle workers on a 2-core machine took
#: 0.9 of its cores, which the tasks then lacked. With these, ~0.2 (measured with 16
#: workers: 0.026 -> 0.004 of a core per worker, 0.11 -> 0.03 for the scheduler's process).
#: The dashboard keeps every page; its profile has fewer samples.
QUIET_TIMERS: dict[str, str] = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.profile.interval": "100ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def quiet_timers() -> contextlib.AbstractContextManager[object]:
    """A dask config context with :data:`QUIET_TIMERS`, held while schedulers and nannies run.

    A nanny hands the config it was made under to each worker process it starts or
    restarts, so the workers run with it too; it keeps a shallow copy, which the context's
    exit resets: hold the context for as long as the nannies live. A value the user set (a
    dask config file, a ``DASK_...`` variable) wins: only values still at dask's shipped
    default are replaced.
    """
    import dask.config

    shipped = dask.config.merge(*dask.config.defaults)
    ours = {
        key: value for key, value in QUIET_TIMERS.items()
        if dask.config.get(key, None) == dask.config.get(key, None, config=shipped)
    }
    return dask.config.set(ours)


#: dask's SpecCluster closes the nanny of a worker that left the scheduler when no worker of
#: that name has come back ``lost-worker-timeout`` (15 s) later, and never starts it again.
#: Meant for clusters whose workers a job queue replaces; in the service a nanny restarts
#: its own worker, and a restart that happened to be under way at that moment (a withdrawn
#: call's worker ended, ``Client.restart``) cost the service that worker for good.
_KEEP_NANNIES = {"distributed.deploy.lost-worker-timeout": "3650 days"}


def _revive_workers(cluster: Any) -> list[str]:
    """Start again, from the service's spec, every worker whose nanny is gone or closed;
    return their names. Whatever ended a nanny, the service keeps its N workers."""
    from distributed.core import Status

    def gone() -> list[str]:
        return [
            name for name in cluster.worker_spec
            if name not in cluster.workers
            or cluster.workers[name].status in (Status.closed, Status.failed)
        ]

    if not gone():  # read from this thread: cheap, and the loop thread re-checks
        return []

    async def revive() -> list[str]:
        names = gone()
        for name in names:
            cluster.workers.pop(name, None)
        if names:
            await cluster._correct_state()
        return names

    names: list[str] = cluster.sync(revive)
    return names


def worker_count(text: str) -> int:
    """An argparse type: a worker count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (0 asks for any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value} is no TCP port: give 1-65535 (0 picks a free one)")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``just-distribute cluster``."""
    parser.add_argument("--workers", "-n", type=worker_count, default=None,
                        help="worker processes, one thread each (default: usable CPUs)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve on (default 127.0.0.1; others need --tls)")
    parser.add_argument("--port", type=port_number, default=8786,
                        help="scheduler port (default 8786; 0 picks a free one)")
    parser.add_argument("--dashboard-port", type=port_number, default=8787,
                        help="dashboard and /metrics port (default 8787; 0 picks a free one)")
    parser.add_argument("--tls", action="store_true",
                        help="encrypt and authenticate with a private CA made in --tls-dir")
    parser.add_argument("--tls-dir", default="just-distribute-tls",
                        help="where --tls writes (or finds) ca.pem, cert.pem, key.pem")
    parser.add_argument("--tls-ca", help="CA certificate file (with --tls-cert, --tls-key)")
    parser.add_argument("--tls-cert", help="certificate file of the service")
    parser.add_argument("--tls-key", help="private key file of the certificate")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)


def given_tls_files(args: argparse.Namespace) -> _tls.TlsFiles | None:
    """The files of --tls-ca/--tls-cert/--tls-key, or None when none is given.

    Raises:
        ValueError: only some of the three were given.
    """
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together: give all three")
    return _tls.resolve((args.tls_ca, args.tls_cert, args.tls_key))


def tls_from_args(args: argparse.Namespace) -> _tls.TlsFiles | None:
    """The TLS files named or requested on the command line (made if asked to).

    Raises:
        ValueError: only some of --tls-ca/--tls-cert/--tls-key were given.
    """
    files = given_tls_files(args)
    if files is not None:
        return files
    if args.tls:
        extra = [args.host] if getattr(args, "host", None) else []
        return _tls.generate(args.tls_dir, extra)
    return None


def check_can_listen(host: str, port: int, what: str) -> None:
    """Fail at once, with the cause, when ``host:port`` cannot be listened on.

    Raises:
        OSError: a host that is not an interface of this machine, or a port in use.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"--host {host!r} is not a name or address of this machine: "
                      f"{exc.strerror}") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"the {what} port {port} on {host} is in use (another "
                              f"service?): pick another port (0: any free one)") from None
            raise OSError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback interface."""
    return _is_loopback(host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_warning(host: str, tls: object) -> str | None:
    """The warning for serving on ``host`` with these TLS settings (None when it is safe)."""
    if _is_loopback(host) or tls is not None:
        return None
    return (
        f"serving on {host} without TLS: anyone who can reach this port can run code on "
        f"these machines. Use --tls, or --host 127.0.0.1 behind an SSH tunnel."
    )


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("the function service", "cluster", "distributed") from None
    return distributed


def _http_urls(scheduler: Any, host: str) -> tuple[str | None, str | None]:
    server = getattr(scheduler, "http_server", None)
    if server is None:
        return None, None
    port = server.port
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    base = f"http://{shown}:{port}"
    try:
        import prometheus_client  # noqa: F401 - dask serves /metrics only when it is installed
    except ImportError:
        metrics = None
    else:
        metrics = f"{base}/metrics"
    return f"{base}/status", metrics


def serve(
    workers: int,
    *,
    host: str = "127.0.0.1",
    port: int = 8786,
    dashboard_port: int = 8787,
    tls: _tls.TlsFiles | None = None,
    stop: threading.Event,
    announce: Callable[[str], None] = print,
    parent_pid: int | None = None,
) -> None:
    """Run the service in this process until ``stop`` is set (or ``parent_pid`` is gone).

    Args:
        workers: worker processes, each with one thread.
        host: the interface to bind.
        port: the scheduler port (0: a free one).
        dashboard_port: the dashboard and /metrics port (0: a free one).
        tls: certificate files; None serves plain TCP.
        stop: set it to end the service.
        announce: receives the lines that tell the address, dashboard and metrics URLs.
        parent_pid: end the service when this process is gone.
    """
    distributed = _import_distributed()
    from distributed import Nanny, Scheduler, SpecCluster

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    # dask would retry a port in use or a foreign host for a long while, then print pages.
    check_can_listen(host, port, "scheduler")
    security = _tls.security(tls) if tls is not None else None
    protocol = "tls://" if tls is not None else "tcp://"
    message = insecure_warning(host, tls)
    if message is not None:
        warnings.warn(message, stacklevel=2)
        log.warning("%s", message)
    common = {"host": host, "protocol": protocol, "security": security}
    scheduler_spec = {
        "cls": Scheduler,
        "options": {**common, "port": port, "dashboard": True,
                    "dashboard_address": f"{host}:{dashboard_port}"},
    }
    # Named workers ("worker-0", ...): stable names in the dashboard, logs and metrics.
    worker_spec = {
        f"worker-{i}": {
            "cls": Nanny,
            "options": {**common, "nthreads": 1, "dashboard": False, "silence_logs": logging.ERROR},
        }
        for i in range(workers)
    }
    # For the service's whole life, not only while it starts: a nanny hands its config
    # (a shallow copy, which dask's context exit would reset) to every worker it restarts.
    import dask.config

    with quiet_timers(), dask.config.set(_KEEP_NANNIES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bokeh-missing and port-in-use chatter
            cluster = SpecCluster(  # type: ignore[no-untyped-call]
                workers=worker_spec, scheduler=scheduler_spec, security=security,
                silence_logs=logging.ERROR, name="just-distribute",
            )
        try:
            client_security = security
            with distributed.Client(cluster, security=client_security, timeout=60) as client:
                client.wait_for_workers(workers, timeout=_START_TIMEOUT)
            dashboard, metrics = _http_urls(cluster.scheduler, host)
            if dashboard is not None and not _is_loopback(host):
                open_http = (
                    f"the dashboard ({dashboard}) and /metrics listen on {host} with no "
                    f"authentication and no TLS: whoever reaches them sees the service's tasks "
                    f"and workers. Firewall that port, or pass --dashboard-port on loopback "
                    f"behind an SSH tunnel."
                )
                log.warning("%s", open_http)
                print(f"warning: {open_http}", file=sys.stderr, flush=True)
            announce(f"scheduler: {cluster.scheduler_address}")
            announce(f"dashboard: {dashboard or 'off'}")
            announce(f"metrics: {metrics or 'off (pip install prometheus-client)'}")
            announce(f"workers: {workers} processes x 1 thread")
            if tls is not None:
                announce(f"tls: ca={tls.ca} cert={tls.cert} key={tls.key}")
            if tls is not None:
                # The --tls layout has an identity made for clients beside the scheduler's.
                mine = Path(tls.cert).parent
                clients = mine.parent / "client" if mine.name == "scheduler" else mine
                if mine.name == "scheduler":
                    announce(f"workers of other hosts: just-distribute worker "
                             f"{cluster.scheduler_address} --tls {mine.parent / 'worker'}")
            use_tls = "" if tls is None else f", tls={str(clients)!r}"
            announce(
                f"clients: distribute(job='cluster', address={cluster.scheduler_address!r}"
                f"{use_tls}), or set JUST_DISTRIBUTE_ADDRESS"
                + ("" if tls is None else " and JUST_DISTRIBUTE_TLS")
            )
            announce(_READY)
            while not stop.wait(0.5):
                if parent_pid is not None and not _alive(parent_pid):
                    log.warning("the process that started the service is gone: stopping")
                    break
                try:
                    revived = _revive_workers(cluster)
                except Exception as exc:  # the next round tries again
                    log.warning("could not start a lost worker again: %s", exc)
                    continue
                if revived:
                    log.warning("started %s again: its nanny had stopped",
                                ", ".join(revived))
        finally:
            with contextlib.suppress(Exception):
                cluster.close(timeout=30)
            _reap_children()


def _alive(pid: int) -> bool:
    if os.getppid() != pid:  # re-parented: the starter died
        return False
    return alive(pid)


def _reap_children() -> None:
    """Stop any child process the cluster left behind."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + 5
    for child in children:
        child.join(max(0.1, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(2)


def main(args: argparse.Namespace) -> int:
    """Run ``just-distribute cluster``: serve until Ctrl-C or SIGTERM."""
    if not getattr(args, "verbose", False):
        # A failure is reported in one line below; dask's own account of it is for -v.
        # (After importing dask, which sets up its loggers on import.)
        with contextlib.suppress(MissingExtraError):
            _import_distributed()
        for name in ("distributed", "distributed.deploy.spec"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        tls = tls_from_args(args)
    except (ValueError, FileNotFoundError, TypeError, MissingExtraError) as exc:
        print(f"just-distribute cluster: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        serve(
            args.workers or usable_cpus(), host=args.host, port=args.port,
            dashboard_port=args.dashboard_port, tls=tls, stop=stop, announce=announce,
            parent_pid=args.parent_pid,
        )
    except MissingExtraError as exc:
        print(f"just-distribute cluster: {exc}", file=sys.stderr)
        return 2
    print("just-distribute: service stopped", flush=True)
    # Ctrl-C: the shell's convention for "interrupted" (128 + SIGINT).
    return 130 if signal.SIGINT in interrupted else 0
