"""Run long calls until SIGINT, then either let the KeyboardInterrupt end the program or
catch it and run the next call.

Usage: python ctrl_c_exit.py MARKER_DIR JOB MODE [ADDRESS]

JOB is compute, io, web (a plain function), web-async (an ``async def``), serial or
cluster; MODE is "uncaught" or "caught". Prints JSON lines: "ready", then, when caught,
"next" with the next call's result and how long it took.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from just_distribute import distribute


def long_call(x: int, *, marker_dir: str) -> int:
    open(os.path.join(marker_dir, f"started-{x}"), "w").close()
    time.sleep(60)
    return x


async def long_call_async(x: int, *, marker_dir: str) -> int:
    open(os.path.join(marker_dir, f"started-{x}"), "w").close()
    await asyncio.sleep(60)
    return x


def quick(x: int) -> int:
    return x + 1


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    marker_dir, job, mode = sys.argv[1:4]
    where: dict[str, Any] = {} if job == "serial" else {"workers": 2}
    if len(sys.argv) > 4:
        where = {"address": sys.argv[4]}
    fn = long_call_async if job == "web-async" else long_call
    job = "web" if job == "web-async" else job
    quick_job = distribute(quick, job=job, **where)
    say(event="ready", warm=quick_job([1, 2]))
    if mode == "uncaught":
        distribute(fn, job=job, **where)(range(8), marker_dir=marker_dir)
        return
    try:
        distribute(fn, job=job, **where)(range(8), marker_dir=marker_dir)
    except KeyboardInterrupt:
        say(event="interrupted")
    began = time.monotonic()
    result = quick_job(range(4))
    say(event="next", result=result, seconds=time.monotonic() - began)


if __name__ == "__main__":
    main()
