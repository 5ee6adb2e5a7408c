"""``apply``/``apply_async`` run through the engine: retries, timeouts, the window.

The same policy as ``map`` (``engine.execute``), from the ``config()`` in force when the
pool is made.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from just_distribute import Pool, config
from just_distribute.errors import CallTimeoutError


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail_twice(directory: str, key: str) -> str:
    """Fails on its first two attempts for ``key`` (counted in files: any process)."""
    attempts = len(list(Path(directory).glob(f"{key}-*")))
    Path(directory, f"{key}-{attempts}").touch()
    if attempts < 2:
        raise ConnectionError(f"attempt {attempts} of {key} fails")
    return key


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io"])
def test_apply_honours_retries_and_timeout(job: str, tmp_path: Path) -> None:
    with config(retries=2), Pool(2, job=job) as pool:
        assert pool.apply(fail_twice, (str(tmp_path), "a")) == "a"
        assert pool.apply_async(fail_twice, (str(tmp_path), "b")).get(60) == "b"
    with Pool(2, job=job) as pool, pytest.raises(ConnectionError):
        pool.apply(fail_twice, (str(tmp_path), "c"))  # no retries without config
    with config(timeout=0.2), Pool(2, job=job) as pool:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError, match=r"timeout=0\.2"):
            pool.apply(nap, (30,))
        assert time.monotonic() - started < 20  # not the 30 s of the call
        assert pool.apply(nap, (0.01,)) == 0.01


_running = 0
_most = 0
_count_lock = threading.Lock()


def count_concurrency(seconds: float) -> int:
    global _running, _most
    with _count_lock:
        _running += 1
        _most = max(_most, _running)
    time.sleep(seconds)
    with _count_lock:
        _running -= 1
    return _most


@pytest.mark.timeout(60)
def test_apply_async_honours_max_in_flight() -> None:
    global _most
    _most = 0
    with config(max_in_flight=1), Pool(4, job="io") as pool:
        results = [pool.apply_async(count_concurrency, (0.01,)) for _ in range(20)]
        assert [r.get(30) for r in results][-1] == 1
    _most = 0
    with Pool(4, job="io") as pool:  # the check can fail: 4 at once
        results = [pool.apply_async(count_concurrency, (0.05,)) for _ in range(20)]
        assert max(r.get(30) for r in results) > 1
