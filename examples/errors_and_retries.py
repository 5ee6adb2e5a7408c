"""What happens when things go wrong: exceptions, on_error, retries, timeouts, dead workers.

Run: python examples/errors_and_retries.py
"""

from __future__ import annotations

import os
import time
from collections import Counter

from just_distribute import CallTimeoutError, WorkerLostError, distribute


@distribute(job="compute", workers=2)
def inverse(x: float) -> float:
    return 1 / x


attempts: Counter[int] = Counter()


@distribute(job="io", workers=4, retries=2, retry_on=(ConnectionError,))
def flaky(i: int) -> int:
    attempts[i] += 1
    if attempts[i] == 1:
        raise ConnectionError(f"call {i}: the server hung up")
    return i


@distribute(job="compute", workers=2, timeout=1.0)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@distribute(job="compute", workers=2)
def crash_on(x: int) -> int:
    if x == 3:
        os._exit(3)  # as a segfault in a C extension would end the worker
    return x


def main() -> None:
    try:
        inverse([1, 2, 0, 4])
    except ZeroDivisionError as exc:
        print(f"raised:    {type(exc).__name__}; {exc.__notes__[-1]}")
    mixed = inverse.with_options(on_error="return")([1, 0, 4])
    print(f"returned:  {mixed!r}")

    assert flaky(range(10)) == list(range(10))
    print(f"retried:   10 calls, {sum(attempts.values())} attempts")

    try:
        nap([0.01, 30.0])
    except CallTimeoutError as exc:
        print(f"timed out: {exc}")
    assert nap([0.01]) == [0.01]

    try:
        crash_on(range(6))
    except WorkerLostError as exc:
        print(f"lost:      exit code {exc.exitcode}")
    assert crash_on([1, 2]) == [1, 2]
    print("the pools recovered after every failure")
    print("errors_and_retries ok")


if __name__ == "__main__":
    main()
