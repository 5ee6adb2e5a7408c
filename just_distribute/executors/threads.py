"""``job="io"``: a thread pool, for calls that wait on disks, sockets or subprocesses."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from typing import Any

from just_distribute.executors.base import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import run_chunk

__all__ = ["ThreadExecutor"]


def pass_failure(inner: Future[None], fut: ChunkFuture) -> None:
    """Fail ``fut`` if its work item will never run it, so that no caller waits forever.

    That happens when a failed initializer breaks the thread pool (its queued items fail
    with BrokenThreadPool) and when a shutdown drops the queued items.
    """
    if inner.cancelled():
        exc: BaseException | None = RuntimeError(
            "the thread pool was shut down before this chunk ran"
        )
    else:
        exc = inner.exception()
    if exc is not None:
        with contextlib.suppress(InvalidStateError):  # cancelled by the caller meanwhile
            fut.set_exception(exc)


class ThreadExecutor(Executor):
    """Runs chunks on a pool of ``workers`` threads, kept and reused across calls.

    A thread cannot be killed: on a timeout the caller stops waiting at once, but the call
    itself runs on to its end in its thread.
    """

    name = "io"
    native_initializer = True
    chunks_per_worker = 16
    in_flight_per_worker = 2

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(workers)
        self._pool = ThreadPoolExecutor(
            workers, "just_distribute-io", initializer=initializer, initargs=initargs
        )

    def _run(self, task: Task, fut: ChunkFuture) -> None:
        if not fut.mark_started():
            return
        try:
            name = threading.current_thread().name
            result = run_chunk(
                task.payload.fn, task.columns, task.stop_on_error, name, self.name, False,
                task.channel(name),
            )
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def submit(self, task: Task) -> ChunkFuture:
        """Queue the chunk on the thread pool."""
        fut = ChunkFuture()
        self._pool.submit(self._run, task, fut).add_done_callback(
            lambda inner: pass_failure(inner, fut)
        )
        return fut

    def shutdown(self, wait: bool = True) -> None:
        """Stop the threads (queued chunks are dropped)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
