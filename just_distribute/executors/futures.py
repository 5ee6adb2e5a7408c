"""Any ``concurrent.futures.Executor`` passed as ``job=`` (a user's own pool)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Sequence
from typing import Any

from just_distribute.executors import wire as _wire
from just_distribute.executors.base import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import ChunkResult, run_chunk

__all__ = ["FuturesExecutor"]


def _run_serialized(payload: bytes, columns: Sequence[Sequence[Any]], stop: bool) -> ChunkResult:
    fn: Callable[..., Any] = _wire.loads(payload)
    return run_chunk(fn, columns, stop, threading.current_thread().name, "futures", True)


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

    def submit(self, task: Task) -> ChunkFuture:
        """Submit the chunk to the user's pool and mirror its future."""
        fut = ChunkFuture()
        if self.threads:
            inner = self.pool.submit(
                run_chunk, task.payload.fn, task.columns, task.stop_on_error,
                "thread", "", False,
            )
        else:
            inner = self.pool.submit(
                _run_serialized, task.payload.serialized(), task.columns, task.stop_on_error
            )
        fut.mark_started()

        def copy(done: cf.Future[ChunkResult]) -> None:
            if done.cancelled():
                fut.cancel()
            elif (exc := done.exception()) is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(done.result())

        inner.add_done_callback(copy)
        return fut

    def check_nesting(self) -> bool:
        """A user's pool decides its own nesting."""
        return False
