"""Run a long job until SIGINT; report what the caller saw (one JSON line per event).

Usage: python ctrl_c.py MARKER_DIR [JOB]

JOB is "compute" (default) or "cluster" (an embedded local cluster). A compute worker busy
with an abandoned call is killed; a dask task cannot be stopped once it runs, so on the
cluster the long calls are only a few seconds long and the next call waits for them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psutil

from just_distribute import distribute


def long_call(x: int, *, marker_dir: str, seconds: float) -> int:
    open(os.path.join(marker_dir, f"started-{x}-{os.getpid()}"), "w").close()
    time.sleep(seconds)
    return x


def quick(x: int) -> int:
    return x + 1


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    marker_dir = sys.argv[1]
    job = sys.argv[2] if len(sys.argv) > 2 else "compute"
    seconds = 60.0 if job == "compute" else 4.0
    me = psutil.Process()
    quick_job = distribute(quick, job=job, workers=2)
    say(event="ready", warm=quick_job([1, 2]))
    service = {p.pid for p in me.children(recursive=True)} if job == "cluster" else set()
    try:
        distribute(long_call, job=job, workers=2)(range(8), marker_dir=marker_dir,
                                                  seconds=seconds)
    except KeyboardInterrupt:
        caught = time.monotonic()
        say(event="interrupted", at=caught)
    else:
        say(event="finished")
        return
    def workers() -> list[int]:
        return [p.pid for p in me.children(recursive=True) if p.pid not in service]

    deadline = time.monotonic() + 10
    while workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    say(event="children", pids=workers())
    say(event="next", result=quick_job(range(4)))


if __name__ == "__main__":
    main()
