"""Count the calls that still start after a run's error reached the caller.

Usage: python cancel_count.py JOB MARKER_DIR [ADDRESS]

2,000 calls of 20 ms, call 5 fails. Each call leaves a file named after its start time;
prints one JSON line: calls started after the caller saw the error (counted 3 s later,
once leftovers would have run), and how long the next call took.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from just_distribute import distribute


class Boom(Exception):
    """The failure of call 5."""


def slow(x: int, *, marker_dir: str) -> int:
    with open(os.path.join(marker_dir, f"{x}"), "w") as out:
        out.write(repr(time.time()))
    if x == 5:
        raise Boom(x)
    time.sleep(0.02)
    return x


async def slow_async(x: int, *, marker_dir: str) -> int:
    import asyncio

    with open(os.path.join(marker_dir, f"{x}"), "w") as out:
        out.write(repr(time.time()))
    if x == 5:
        raise Boom(x)
    await asyncio.sleep(0.02)
    return x


def quick(x: int) -> int:
    return x + 1


def main() -> None:
    job, marker_dir = sys.argv[1], sys.argv[2]
    where: dict[str, Any] = {"workers": 4}
    if len(sys.argv) > 3:
        where = {"address": sys.argv[3]}
    fn = slow_async if job == "web-async" else slow
    job = "web" if job == "web-async" else job
    f = distribute(fn, job=job, **where)
    distribute(quick, job=job, **where)([1])  # warm: workers up, functions loaded
    try:
        f(range(2000), marker_dir=marker_dir)
    except Boom:
        seen = time.time()
    else:
        raise AssertionError("call 5 did not fail")
    began = time.monotonic()
    nxt = distribute(quick, job=job, **where)(range(8))
    next_seconds = time.monotonic() - began
    assert nxt == list(range(1, 9)), nxt
    time.sleep(3)
    starts = []
    for name in os.listdir(marker_dir):
        with open(os.path.join(marker_dir, name)) as marker:
            starts.append(float(marker.read() or 0))
    after = sum(1 for t in starts if t > seen)
    print(json.dumps({"after": after, "ran": len(starts), "next_seconds": next_seconds}),
          flush=True)


if __name__ == "__main__":
    main()
