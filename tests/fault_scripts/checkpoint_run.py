"""A compute job with ``checkpoint=``; each call appends its index to a log file.

Usage: python checkpoint_run.py CHECKPOINT_DIR LOG_FILE N SECONDS_PER_CALL
Prints the JSON result list when the run completes.
"""

from __future__ import annotations

import json
import os
import sys
import time

from just_distribute import distribute


@distribute(job="compute", workers=2)
def square(x: int, *, log: str, pause: float) -> int:
    time.sleep(pause)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return x * x


if __name__ == "__main__":
    directory, log, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    results = square.with_options(checkpoint=directory)(range(n), log=log, pause=pause)
    print(json.dumps(results))
