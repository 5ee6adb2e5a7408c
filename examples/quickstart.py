"""The 60-second tour: one function, every local job, the same results.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import time

from just_distribute import config, distribute


@distribute(job="compute", workers=2)
def collatz_steps(n: int) -> int:
    """Steps for ``n`` to reach 1 in the Collatz sequence (pure-Python CPU work)."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


@distribute(job="io", workers=16)
def wait_and_echo(x: int) -> int:
    """Sleeps as a call to a disk or a database would."""
    time.sleep(0.01)
    return x


@distribute(job="compute", workers=2)
def total(numbers: list[int]) -> int:
    """A batch parameter: each call gets a contiguous slice of the list."""
    return sum(numbers)


def main() -> None:
    start = time.perf_counter()
    steps = collatz_steps(range(1, 20_001))
    print(f"compute: {len(steps)} calls, longest chain {max(steps)} steps, "
          f"{time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    echoed = wait_and_echo(range(160))
    print(f"io:      160 calls of 10 ms on 16 threads in {time.perf_counter() - start:.2f} s")
    assert echoed == list(range(160))

    per_batch = total(list(range(100_000)))
    print(f"batches: {len(per_batch)} batch sums adding up to {sum(per_batch)}")
    assert sum(per_batch) == sum(range(100_000))

    with config(job="serial"):
        assert collatz_steps(range(1, 2_001)) == steps[:2_000]
    print("serial:  same results in the calling thread")
    print("quickstart ok")


if __name__ == "__main__":
    main()
