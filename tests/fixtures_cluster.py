"""Fixtures for the cluster job: a real function service (scheduler + worker processes).

The service is the ``cluster`` command itself, started as a subprocess on 127.0.0.1 with
free ports, once per session: each start costs seconds.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

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
