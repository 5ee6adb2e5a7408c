"""The functions every library runs: module-level, so that every pool can import them."""

from __future__ import annotations

import time


def square(x: int) -> int:
    """S1, S5: the cheapest possible call."""
    return x * x


def square_chunk(xs: list[int]) -> list[int]:
    """S5: the hand-chunked dask peer's task: a whole chunk in one call."""
    return [x * x for x in xs]


def busy(n: int) -> int:
    """S2, S6: a pure-Python loop of ``n`` steps (calibrated to about 7 ms)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate_busy(seconds: float) -> int:
    """The ``n`` for which :func:`busy` takes about ``seconds`` on this machine."""
    n = 10_000
    while True:
        best = min(_timed(busy, n) for _ in range(3))
        if best > 0.002:
            return max(1, int(n * seconds / best))
        n *= 4


def _timed(fn: object, arg: int) -> float:
    assert callable(fn)
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def nap(seconds: float) -> float:
    """S3: an I/O wait."""
    time.sleep(seconds)
    return seconds
