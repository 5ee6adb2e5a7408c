"""Starting the function service from a program: :func:`start_service` and its handle.

The service runs as a child process (``python -m just_distribute cluster``) in a session of
its own; the handle stops it and every process it started. This module imports no
executor code: what must happen when a service stops (clients of it disconnecting) is
registered with :func:`on_stop` by those who care.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from just_distribute.errors import JustDistributeError
from just_distribute.service import tls as _tls

__all__ = ["ServiceHandle", "on_stop", "start_service"]

log = logging.getLogger("just_distribute")

_stop_hooks: list[Callable[[str], None]] = []


def on_stop(hook: Callable[[str], None]) -> None:
    """Call ``hook(address)`` whenever a service of this process is about to stop."""
    if hook not in _stop_hooks:
        _stop_hooks.append(hook)

_READY = "just-distribute: service ready"


_START_TIMEOUT = 120.0  # seconds for the service to come up on a loaded machine


class ServiceHandle:
    """A running function service started by :func:`start_service`.

    Attributes:
        address: the scheduler address, e.g. ``"tcp://127.0.0.1:40123"``.
        dashboard_url: the dashboard (None when off).
        metrics_url: the Prometheus metrics (None without prometheus-client).
        tls: the certificate files clients need (None without TLS); pass as ``tls=``.
        pid: the service process id.
    """

    def __init__(
        self, proc: subprocess.Popen[str], info: dict[str, str], log_file: IO[str],
        tls: _tls.TlsFiles | None,
    ) -> None:
        self._proc = proc
        self._log = log_file
        self.pid = proc.pid
        self.address: str = info["scheduler"]
        self.dashboard_url: str | None = info.get("dashboard") if info.get(
            "dashboard", "off").startswith("http") else None
        metrics = info.get("metrics", "off")
        self.metrics_url: str | None = metrics if metrics.startswith("http") else None
        self.tls = tls
        self._temporary: str | None = None  # keys made for this service alone

    def __repr__(self) -> str:
        return f"<ServiceHandle {self.address} pid={self.pid}>"

    @property
    def running(self) -> bool:
        """Whether the service process is still alive."""
        return self._proc.poll() is None

    def log_text(self, last: int = 20_000) -> str:
        """The end (``last`` characters) of what the service has logged so far: dask's
        errors and the service's own warnings (a worker it had to start again, say)."""
        if self._log.closed:
            return ""
        # pread, not seek: the service writes through the same file offset.
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - 4 * last)
        return os.pread(fd, size - start, start).decode(errors="replace")[-last:]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service and every process it started (SIGTERM, then SIGKILL).

        Distributed functions of this process connected to it are disconnected first, so
        that their clients do not try to reconnect to a service that is gone.
        """
        for hook in list(_stop_hooks):
            try:
                hook(self.address)
            except Exception as exc:  # a client that fails to let go must not keep it alive
                log.warning("while stopping the service at %s: %s", self.address, exc)
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the service did not stop within %.0fs: killing it", timeout)
        # Its process group holds the workers: make sure none outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()
        if self._temporary is not None:  # private keys must not outlive the service
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def __enter__(self) -> ServiceHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tls_for_service(tls: Any) -> tuple[_tls.TlsFiles | None, _tls.TlsFiles | None, str | None]:
    """The service's files, the files for its clients, and a temporary folder to remove."""
    if tls is None or tls is False:
        return None, None, None
    if tls is True:
        folder = tempfile.mkdtemp(prefix="just-distribute-tls-")
        return _tls.generate(folder), _tls.resolve(folder, role="client"), folder
    files = _tls.resolve(tls, role="scheduler")
    return files, _tls.resolve(tls, role="client"), None


def start_service(
    workers: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    dashboard_port: int = 0,
    tls: Any = None,
) -> ServiceHandle:
    """Start the function service as a separate process and return once it serves.

    Args:
        workers: worker processes, one thread each.
        host: the interface to bind (default 127.0.0.1).
        port: the scheduler port (0: a free one).
        dashboard_port: the dashboard and /metrics port (0: a free one).
        tls: None for plain TCP; True to make a private CA in a temporary directory; or a
            directory or ``(ca, cert, key)`` tuple of files (see ``tls=``).

    Returns:
        A :class:`ServiceHandle` (a context manager that stops the service on exit).

    Raises:
        JustDistributeError: the service did not come up; the message holds its log.
    """
    files, client_files, temporary = _tls_for_service(tls)
    try:
        try:
            handle = _launch(workers, host, port, dashboard_port, files)
        except JustDistributeError as exc:
            # A worker process that fails to come up on a heavily loaded machine is not
            # worth failing for: try once more, then report the log.
            log.warning("the function service did not start (%s); trying once more",
                        str(exc).splitlines()[0])
            handle = _launch(workers, host, port, dashboard_port, files)
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    handle.tls = client_files
    handle._temporary = temporary
    return handle


def _launch(
    workers: int, host: str, port: int, dashboard_port: int, files: _tls.TlsFiles | None
) -> ServiceHandle:
    cmd = [
        sys.executable, "-m", "just_distribute", "cluster", "--workers", str(workers),
        "--host", host, "--port", str(port), "--dashboard-port", str(dashboard_port),
        "--parent-pid", str(os.getpid()),
    ]
    if files is not None:
        cmd += ["--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key]
    # Held open by the handle for the service's life: not a with-block.
    log_file = tempfile.TemporaryFile("w+")  # noqa: SIM115
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    # The caller's import path: the workers can then import whatever the caller can (its
    # project modules, its test directory), as the compute job's workers do.
    paths = [package_root, *filter(None, [env.get("PYTHONPATH")]), *filter(None, sys.path)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True,
        env=env, start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, name="just_distribute-service-out", daemon=True).start()
    info: dict[str, str] = {}
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JustDistributeError(f"the service did not start within {_START_TIMEOUT}s")
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                raise JustDistributeError(
                    f"the service exited with code {proc.wait(10)} before it was ready"
                )
            if line == _READY:
                break
            key, sep, value = line.partition(": ")
            if sep:
                info[key] = value
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log_file.seek(0)
        tail = log_file.read()[-8000:]
        log_file.close()
        if isinstance(exc, JustDistributeError):
            raise JustDistributeError(f"{exc}. Its log ends with:\n{tail}") from None
        raise
    return ServiceHandle(proc, info, log_file, files)
