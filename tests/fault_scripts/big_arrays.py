"""Run a long job over big arrays until told otherwise; report what the caller saw.

Usage: python big_arrays.py MARKER_DIR MODE

MODE "sigint": the caller sends itself SIGINT once the workers run; it reports the
segments of its own left right after the KeyboardInterrupt, then exits. MODE "wait": the
caller blocks in the run (the test kills it with SIGKILL). MODE "idle": quick calls, read
with ``iter`` by a caller that dawdles over the first result, so that the workers sit idle
while the run's segments exist (the test kills it with SIGKILL). Each line printed is one JSON
event; the function lives in ``__main__``, as in a user's script.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np

from just_distribute import distribute
from just_distribute.executors import shm


def slow_sum(batch: np.ndarray, *, marker_dir: str, table: np.ndarray) -> float:
    open(os.path.join(marker_dir, f"started-{os.getpid()}-{batch[0]:.0f}"), "w").close()
    time.sleep(60)
    return float(batch.sum() + table[0])


def quick_sum(batch: np.ndarray, *, table: np.ndarray) -> np.ndarray:
    return batch + table[0]


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    marker_dir, mode = sys.argv[1], sys.argv[2]
    data = np.arange(8 * 1_000_000, dtype=np.float64)  # 64 MB: 8 batches of 8 MB
    table = np.ones(2_000_000)  # a 16 MB keyword constant, shared by the workers
    run = distribute(slow_sum, job="compute", workers=2, batches=8)
    say(event="ready", pid=os.getpid())
    if mode == "idle":
        quick = distribute(quick_sum, job="compute", workers=2, batches=8)
        for _ in quick.iter(data, table=table):
            say(event="consuming")
            time.sleep(60)
    if mode == "sigint":
        def interrupt() -> None:
            while len(os.listdir(marker_dir)) < 2:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
    try:
        run(data, marker_dir=marker_dir, table=table)
    except KeyboardInterrupt:
        pass  # (checked once the traceback, which holds the run, is gone)
    else:
        say(event="finished")
        return
    deadline = time.monotonic() + 10
    while shm.leftovers(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    say(event="interrupted", left=shm.leftovers(os.getpid()))


if __name__ == "__main__":
    main()
