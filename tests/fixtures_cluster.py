"""Fixtures for the cluster job: a real function service (scheduler + worker processes).

The service is the ``cluster`` command itself, started as a subprocess on 127.0.0.1 with
free ports, once per session: each start costs seconds.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from just_distribute.executors import shutdown_all
from just_distribute.service import ServiceHandle, start_service

SERVICE_WORKERS = 2
#: Worker count of the embedded cluster in tests: one shared embedded cluster for all.
EMBEDDED_WORKERS = 1


@pytest.fixture(scope="session")
def cluster_service() -> Iterator[ServiceHandle]:
    """A running function service with two one-thread worker processes."""
    os.environ.pop("JUST_DISTRIBUTE_ADDRESS", None)
    handle = start_service(SERVICE_WORKERS)
    try:
        yield handle
    finally:
        # Close the clients connected to it first: a client left behind would spend the
        # rest of the session trying to reconnect.
        shutdown_all()
        handle.stop()


@pytest.fixture(scope="session")
def cluster_address(cluster_service: ServiceHandle) -> str:
    """The scheduler address of the session's function service."""
    return cluster_service.address


def read_announcement(proc: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, str]:
    """Read the ``key: value`` lines a starting service prints, up to its ready line.

    Raises:
        AssertionError: the service exited or was not ready within ``timeout``.
    """
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    info: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        assert line is not None, f"the service exited early with code {proc.wait(10)}"
        if line.startswith("just-distribute: service ready"):
            return info
        key, sep, value = line.partition(": ")
        if sep:
            info[key] = value
    raise AssertionError(f"the service was not ready within {timeout}s")


def service_command(*args: str) -> list[str]:
    """The ``just-distribute cluster`` command line, run with this interpreter."""
    return [sys.executable, "-m", "just_distribute", "cluster", *args]


#: The package root: the only thing a separately started cluster gets on its import path.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def bare_env(*extra: str) -> dict[str, str]:
    """An environment whose import path holds just_distribute (and ``extra``), not tests/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUST_DISTRIBUTE_")}
    env["PYTHONPATH"] = os.pathsep.join([*extra, PACKAGE_ROOT])
    return env


class BareCluster:
    """``dask scheduler`` and ``dask worker`` started as a user would, from another folder.

    Their working directory is a fresh temporary folder and their import path holds only
    just_distribute: the caller's modules (these tests) are not importable there.
    """

    def __init__(
        self, where: str, workers: int = 2, worker_path: tuple[str, ...] = (), nthreads: int = 1
    ) -> None:
        self.where = where
        self.nthreads = nthreads
        self.log = open(os.path.join(where, "dask.log"), "w")  # noqa: SIM115
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            self._start(workers, worker_path)
        except BaseException:  # leave nothing behind when it does not come up
            self.stop()
            raise

    def _start(self, workers: int, worker_path: tuple[str, ...]) -> None:
        where = self.where
        scheduler_file = os.path.join(where, "scheduler.json")
        self.procs.append(subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", scheduler_file],
            cwd=where, env=bare_env(), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))
        deadline = time.monotonic() + 60
        while not os.path.exists(scheduler_file) and time.monotonic() < deadline:
            time.sleep(0.2)
        import json

        time.sleep(0.2)  # the file is written in one go, but be sure it is complete
        with open(scheduler_file) as f:
            self.address: str = json.load(f)["address"]
        self.procs.append(subprocess.Popen(
            [DASK, "worker", self.address, "--nworkers", str(workers), "--nthreads",
             str(self.nthreads),
             "--host", "127.0.0.1", "--no-dashboard"],
            cwd=where, env=bare_env(*worker_path), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))
        import distributed

        with distributed.Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)

    def stop(self) -> None:
        """Stop the scheduler and the workers."""
        stop_process_groups(self.procs)
        self.log.close()


def stop_process_groups(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM each process group (started with ``start_new_session``), last started first;
    SIGKILL what is still there after 30 s."""
    import signal

    for proc in reversed(procs):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="session")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BareCluster]:
    """A separately started dask cluster (two workers) that cannot import these tests."""
    cluster = BareCluster(str(tmp_path_factory.mktemp("bare-cluster")))
    try:
        yield cluster
    finally:
        shutdown_all()
        cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used the session's service shows the service's own log: what
    dask said about a worker that did not come back is there, not in the test's output."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "cluster_service" in getattr(item, "fixturenames", ()):
        handle = item.funcargs.get("cluster_service") if hasattr(item, "funcargs") else None
        if isinstance(handle, ServiceHandle):
            report.sections.append(("the session's function service log", handle.log_text()))
