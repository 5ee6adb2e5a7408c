"""Calls for tests that time a worker's first call: a module that imports nothing heavy.

A compute worker imports a function's module before its first call; a test module
imports pytest, dask and the package (seconds on a loaded machine), which a timeout
counted from the call's start does not see but a test's overall bound does.
"""

from __future__ import annotations

import time


def sleep_for(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(seconds)
    return seconds
