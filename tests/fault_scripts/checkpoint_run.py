"""A compute job with ``checkpoint=``; each call appends its index to a log file.

Usage: python checkpoint_run.py CHECKPOINT_DIR LOG_FILE N SECONDS_PER_CALL

The log file is named by the environment (inherited by the workers), not by a keyword
constant: a changed constant would rightly make the checkpoint miss.
Prints the JSON result list when the run completes.
"""

from __future__ import annotations

import json
import os
import sys
import time

from just_distribute import distribute


@distribute(job="compute", workers=2)
def square(x: int, *, pause: float) -> int:
    time.sleep(pause)
    fd = os.open(os.environ["CHECKPOINT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return x * x


if __name__ == "__main__":
    directory, log, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    os.environ["CHECKPOINT_LOG"] = log
    results = square.with_options(checkpoint=directory)(range(n), pause=pause)
    print(json.dumps(results))
