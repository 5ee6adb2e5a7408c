"""Checkpoint and resume: a run killed with SIGKILL at ~60% resumes where it stopped.

The script runs itself as a child process that kills itself (SIGKILL, no clean-up at all)
once 60% of the calls are done; then it runs the same function on the same input again and
counts how many calls actually ran.

Run: python examples/checkpoint_resume.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from just_distribute import Distributed, distribute

N = 200
ran: list[int] = []


Progress = bool | Callable[[int, int | None], None]


def make_slow_square(checkpoint: str, progress: Progress = False) -> Distributed[[int], int]:
    """The same function each time; ``progress`` is not part of the checkpoint's key."""

    @distribute(job="io", workers=4, chunksize=5, checkpoint=checkpoint, progress=progress)
    def slow_square(x: int) -> int:
        ran.append(x)
        time.sleep(0.005)
        return x * x

    return slow_square


def child(checkpoint: str) -> None:
    def kill_at_60_percent(done: int, total: int | None) -> None:
        if total and done >= 0.6 * total:
            os.kill(os.getpid(), signal.SIGKILL)

    make_slow_square(checkpoint, kill_at_60_percent)(range(N))


def main() -> None:
    with tempfile.TemporaryDirectory() as checkpoint:
        proc = subprocess.run([sys.executable, __file__, "--child", checkpoint], check=False)
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        print(f"first run: killed with SIGKILL (exit code {proc.returncode})")

        results = make_slow_square(checkpoint)(range(N))
        assert results == [x * x for x in range(N)]
        print(f"second run: {N} correct results, only {len(ran)} calls ran again")
        assert len(ran) < N
    print("checkpoint_resume ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
