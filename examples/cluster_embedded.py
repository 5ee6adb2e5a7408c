"""The cluster job and compute_this on an embedded local dask cluster.

With JUST_DISTRIBUTE_ADDRESS set (or address= on the decorator), the same code runs on a
real cluster: start one with `just-distribute cluster --workers 4`.

Run: python examples/cluster_embedded.py
"""

from __future__ import annotations

import time

from just_distribute import compute_this, distribute


@distribute(job="cluster", workers=2)
def slow_square(x: int) -> int:
    time.sleep(0.001)
    return x * x


@compute_this()
def simulate(seconds: float) -> str:
    time.sleep(seconds)
    return f"simulated for {seconds} s"


def main() -> None:
    start = time.perf_counter()
    squares = slow_square(range(2_000))
    assert squares == [x * x for x in range(2_000)]
    print(f"cluster: 2000 calls in {time.perf_counter() - start:.2f} s (first call starts it)")

    task = simulate(0.5)          # checked against the signature; nothing sent yet
    print(f"compute_this: {task.run()}")
    print("cluster_embedded ok")


if __name__ == "__main__":
    main()
