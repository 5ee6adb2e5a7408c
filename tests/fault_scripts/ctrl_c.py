"""Run a long compute job until SIGINT; report what the caller saw (one JSON line per event).

Usage: python ctrl_c.py MARKER_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time

import psutil

from just_distribute import distribute


@distribute(job="compute", workers=2)
def long_call(x: int, *, marker_dir: str) -> int:
    open(os.path.join(marker_dir, f"started-{x}-{os.getpid()}"), "w").close()
    time.sleep(60)
    return x


@distribute(job="compute", workers=2)
def quick(x: int) -> int:
    return x + 1


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    marker_dir = sys.argv[1]
    me = psutil.Process()
    say(event="ready", warm=quick([1, 2]))
    try:
        long_call(range(8), marker_dir=marker_dir)
    except KeyboardInterrupt:
        caught = time.monotonic()
        say(event="interrupted", at=caught)
    else:
        say(event="finished")
        return
    deadline = time.monotonic() + 10
    while me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    say(event="children", pids=[p.pid for p in me.children(recursive=True)])
    say(event="next", result=quick(range(4)))


if __name__ == "__main__":
    main()
