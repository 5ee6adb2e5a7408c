"""Per-call timeouts, retries with backoff and ``retry_on``, and ``on_error``."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from just_distribute import distribute
from just_distribute.config import resolve_options
from just_distribute.errors import CallTimeoutError, RemoteTraceback
from just_distribute.executors import get_executor
from just_distribute.executors.processes import ProcessExecutor

WORKERS = 2


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fail_until(x: int, *, tally: str, failures: int) -> int:
    """Fail the first ``failures`` attempts of each call; attempts are counted in files."""
    path = Path(tally) / f"{x}"
    with open(path, "a") as f:
        f.write(".")
    if path.stat().st_size <= failures:
        raise ConnectionError(f"flaky attempt for {x}")
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ZeroDivisionError(f"bad input {x}")
    return x


# -- 2. timeouts --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_compute_timeout_kills_and_replaces_the_stuck_worker() -> None:
    pool = get_executor(resolve_options({"job": "compute", "workers": WORKERS}))
    assert isinstance(pool, ProcessExecutor)
    f = distribute(sleep_then_pid, job="compute", workers=WORKERS, timeout=0.5)
    deadline = time.monotonic() + 30
    while len(pool.pids()) < WORKERS:  # both workers up, so that we know every pid
        assert time.monotonic() < deadline
        f([0.1] * 4)
    before = set(pool.pids())
    with pytest.raises(CallTimeoutError) as info:
        f([0.0, 30.0, 0.0])
    err = info.value
    assert isinstance(err, TimeoutError)
    assert "call 1" in str(err) and "timeout=0.5" in str(err)
    assert "raised by call 1: sleep_then_pid(seconds=30.0)" in "\n".join(err.__notes__)

    def alive(pid: int) -> bool:
        return psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"

    # The worker stuck in the 30 s call was killed; the other one lives on.
    while sum(alive(p) for p in before) != WORKERS - 1:
        assert time.monotonic() < deadline + 30, "the stuck worker was not killed"
        time.sleep(0.05)
    # A new worker takes the killed one's place: the next calls run.
    assert len(f([0.0] * 6)) == 6
    assert len(pool.pids()) >= 1


@pytest.mark.timeout(60)
def test_compute_timeout_with_on_error_return_keeps_the_other_results() -> None:
    f = distribute(
        sleep_then_pid, job="compute", workers=WORKERS, timeout=0.5, on_error="return"
    )
    out = f([0.0, 30.0, 0.0, 0.0])
    assert isinstance(out[1], CallTimeoutError)
    assert all(isinstance(v, int) for i, v in enumerate(out) if i != 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["io", "web"])
@pytest.mark.parametrize("kind", ["plain", "async"])
def test_io_and_web_timeouts_return_at_once(job: str, kind: str) -> None:
    finished = threading.Event()

    def slow(seconds: float) -> float:
        time.sleep(seconds)
        if seconds > 1:
            finished.set()
        return seconds

    async def slow_async(seconds: float) -> float:
        await asyncio.sleep(seconds)
        if seconds > 1:
            finished.set()
        return seconds

    fn: Any = slow if kind == "plain" else slow_async
    f = distribute(fn, job=job, workers=WORKERS, timeout=0.3)
    with pytest.raises(CallTimeoutError) as info:
        f([0.01, 3.0, 0.01])
    # The caller got its error while the stuck call was still running (or cancelled).
    assert not finished.is_set()
    assert "raised by call 1" in "\n".join(info.value.__notes__)


# -- 3. retries ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_flaky_web_api_is_retried_with_backoff(web_server: Any) -> None:
    attempts: Counter[int] = Counter()
    times: dict[int, list[float]] = {}
    base = 1000  # ids of our own on the shared server

    @distribute(
        job="web", workers=8, retries=3, backoff=0.05,
        retry_on=(aiohttp.ClientResponseError,),
    )
    async def fetch(i: int) -> int:
        attempts[i] += 1
        times.setdefault(i, []).append(time.monotonic())
        if i == base + 7:
            raise ValueError("not retried: not in retry_on")
        status = 500 if i % 2 and attempts[i] <= 2 else 200
        async with aiohttp.ClientSession() as session, session.get(
            web_server.url, params={"i": str(i), "delay": "0", "status": str(status)}
        ) as response:
            response.raise_for_status()
            return int(await response.text())

    ids = [base + k for k in range(7)]
    assert fetch(ids) == ids
    hits = Counter(web_server.hits)
    for i in ids:
        assert hits[i] == (3 if i % 2 else 1), (i, hits[i])
        if i % 2:
            gaps = [b - a for a, b in zip(times[i], times[i][1:], strict=False)]
            assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # backoff doubles
    with pytest.raises(ValueError, match="not retried"):
        fetch([base + 7])
    assert attempts[base + 7] == 1


@pytest.mark.timeout(60)
def test_compute_retries_until_success_and_gives_up_after_the_limit(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).mkdir()
    ok = distribute(fail_until, job="compute", workers=WORKERS, retries=2, chunksize=3)
    assert ok(range(9), tally=str(tmp_path / "a"), failures=2) == [x * x for x in range(9)]
    assert all((tmp_path / "a" / str(x)).stat().st_size == 3 for x in range(9))
    with pytest.raises(ConnectionError) as info:
        ok(range(4), tally=str(tmp_path / "b"), failures=5)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    wrong_kind = ok.with_options(retry_on=(KeyError,))
    with pytest.raises(ConnectionError):
        wrong_kind([5], tally=str(tmp_path / "c"), failures=1)
    assert (tmp_path / "c" / "5").stat().st_size == 1


# -- 4. on_error ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["compute", "io", "serial"])
def test_on_error_raise_is_the_default_and_names_the_call(job: str) -> None:
    f = distribute(fail_on_three, job=job, workers=WORKERS, chunksize=2)
    with pytest.raises(ZeroDivisionError, match="bad input 3") as info:
        f(range(8))
    assert "raised by call 3: fail_on_three(x=3)" in "\n".join(info.value.__notes__)
    if job == "compute":
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "fail_on_three" in str(info.value.__cause__)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["compute", "io", "serial"])
def test_on_error_return_puts_the_exception_in_its_place(job: str) -> None:
    f = distribute(fail_on_three, job=job, workers=WORKERS, chunksize=3, on_error="return")
    out = f([*range(10), 3])
    for i, v in enumerate(out):
        if i in (3, 10):
            assert isinstance(v, ZeroDivisionError)
            assert f"raised by call {i}" in "\n".join(v.__notes__)
        else:
            assert v == i
