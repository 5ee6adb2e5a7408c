"""A backend written as a user would: from public names only, over a process pool.

``tests/test_jobs.py`` runs its generic suite on it as the job ``"user-processes"``.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from just_distribute import ChunkFuture, Executor, Options, Task, register_executor


class ProcessPoolBackend(Executor):
    """Every chunk runs in a ``concurrent.futures.ProcessPoolExecutor``."""

    name = "user-processes"
    remote = True  # results cross a process boundary: tracebacks travel as text

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        # spawn: fresh interpreters, as the caller may run threads (fork would copy locks).
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, task: Task) -> ChunkFuture:
        future = ChunkFuture()
        future.track(self.pool.submit(task.portable()))
        return future

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


def _make(options: Options) -> ProcessPoolBackend:
    assert options.workers is not None
    return ProcessPoolBackend(options.workers)


register_executor("user-processes", _make)
