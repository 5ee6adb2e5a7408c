"""Any ``concurrent.futures.Executor`` passed as ``job=`` (a user's own pool)."""

from __future__ import annotations

import concurrent.futures as cf

from just_distribute.executors.base import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import ChunkResult

__all__ = ["FuturesExecutor"]


class FuturesExecutor(Executor):
    """Runs chunks on a ``concurrent.futures`` executor the user owns (never shut down here).

    Thread pools get the function as it is; other executors (process pools) get it
    serialised, so that lambdas and closures work there too.
    """

    name = "futures"
    chunks_per_worker = 4

    def __init__(self, pool: cf.Executor) -> None:
        workers = getattr(pool, "_max_workers", None) or 1
        super().__init__(int(workers))
        self.pool = pool
        self.threads = isinstance(pool, cf.ThreadPoolExecutor)
        self.remote = not self.threads  # type: ignore[misc]
        self._inner: dict[ChunkFuture, cf.Future[ChunkResult]] = {}

    def submit(self, task: Task) -> ChunkFuture:
        """Submit the chunk to the user's pool and mirror its future."""
        fut = ChunkFuture()
        if self.threads:
            inner = self.pool.submit(task.run_here)
        else:
            inner = self.pool.submit(task.portable())
        # Kept until done, so that a withdrawn chunk can be cancelled in the user's pool.
        self._inner[fut] = inner
        inner.add_done_callback(lambda _: self._inner.pop(fut, None))
        fut.track(inner)
        return fut

    def stop_after_call(self, future: ChunkFuture) -> None:
        """Cancel the chunk in the user's pool if it has not started there (a thread
        pool's running chunk stops between calls by itself: see ``Task.run_here``)."""
        inner = self._inner.get(future)
        if inner is not None:
            inner.cancel()

    abandon = stop_after_call

    def check_nesting(self) -> bool:
        """A user's pool decides its own nesting."""
        return False
