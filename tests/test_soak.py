"""A soak: 200 successive calls over every local job, with successes and failures of every
kind, must leave no growth in threads, child processes or open file descriptors."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from just_distribute import distribute, web
from just_distribute.errors import CallTimeoutError, WorkerLostError

WORKERS = 2


def square(x: int) -> int:
    return x * x


def fail_on_two(x: int) -> int:
    if x == 2:
        raise KeyError(x)
    return x


def die_on_two(x: int) -> int:
    if x == 2:
        os._exit(3)
    return x


def hang_on_two(x: int) -> int:
    if x == 2:
        time.sleep(30)
    return x


def make_calls(url: str) -> list[Callable[[], None]]:
    """One function per kind of call; each checks its own outcome."""

    @distribute(job="web", workers=WORKERS)
    async def fetch(i: int) -> int:
        async with web.session().get(url, params={"i": str(i), "delay": "0"}) as response:
            return int(await response.text())

    def ok(job: str) -> Callable[[], None]:
        def run() -> None:
            assert distribute(square, job=job, workers=WORKERS)(range(6)) == [
                x * x for x in range(6)
            ]

        return run

    def raises(job: str) -> Callable[[], None]:
        def run() -> None:
            with pytest.raises(KeyError):
                distribute(fail_on_two, job=job, workers=WORKERS)(range(5))

        return run

    def returns(job: str) -> Callable[[], None]:
        def run() -> None:
            out = distribute(fail_on_two, job=job, workers=WORKERS, on_error="return")(range(4))
            assert isinstance(out[2], KeyError) and out[3] == 3

        return run

    def fetches() -> None:
        assert fetch(range(5)) == list(range(5))

    jobs = ["compute", "io", "web", "serial"]
    calls = [f(job) for job in jobs for f in (ok, raises, returns)]
    return [*calls, fetches, fetches]


def resources() -> tuple[int, int, int]:
    me = psutil.Process()
    return threading.active_count(), len(me.children(recursive=True)), me.num_fds()


@pytest.mark.timeout(180)
def test_200_calls_leave_no_growth(web_server: Any) -> None:
    calls = make_calls(web_server.url)
    for call in calls:  # warm up: every pool started, every thread made
        call()
    baseline = resources()
    schedule = [calls[i % len(calls)] for i in range(200)]
    # Worker deaths and timeouts (a killed and replaced worker each), a few times.
    faults = make_faults()
    for n, at in enumerate((40, 90, 140, 190)):
        schedule[at] = faults[n % 2]
    for call in schedule:
        call()
    deadline = time.monotonic() + 10
    while resources() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)  # replaced workers are reaped, closed connections released
    threads, children, fds = resources()
    assert threads <= baseline[0], (baseline, (threads, children, fds))
    assert children <= baseline[1], (baseline, (threads, children, fds))
    assert fds <= baseline[2], (baseline, (threads, children, fds))


def make_faults() -> list[Callable[[], None]]:
    def worker_dies() -> None:
        with pytest.raises(WorkerLostError):
            distribute(die_on_two, job="compute", workers=WORKERS, chunksize=1)(range(4))

    def times_out() -> None:
        with pytest.raises(CallTimeoutError):
            distribute(hang_on_two, job="compute", workers=WORKERS, timeout=0.3)(range(4))

    return [worker_dies, times_out]
