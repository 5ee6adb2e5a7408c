"""``job="io"``: a thread pool, for calls that wait on disks, sockets or subprocesses."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from just_distribute.executors.base import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import run_chunk

__all__ = ["DaemonThreadPool", "ThreadExecutor"]

log = logging.getLogger("just_distribute")

_Item = tuple[Future[None], Callable[..., object], tuple[Any, ...]]


class DaemonThreadPool:
    """``ThreadPoolExecutor.submit``/``shutdown`` on daemon threads.

    The threads of ``ThreadPoolExecutor`` are joined at interpreter exit, so a call that was
    abandoned (a timeout, ``Pool.terminate()``) but still runs holds the exit until it ends:
    ``sleep(300)`` delays it by 300 s. A thread cannot be killed; a daemon thread at least
    does not hold the exit. As there, a failed initializer breaks the pool for good: its
    queued and later calls fail with ``BrokenThreadPool``.
    """

    def __init__(
        self,
        workers: int,
        prefix: str,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._workers = workers
        self._prefix = prefix
        self._initializer = initializer
        self._initargs = initargs
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._shut = False

    def submit(self, fn: Callable[..., object], *args: Any) -> Future[None]:
        """Queue ``fn(*args)``; the future settles when it has run.

        Raises:
            BrokenThreadPool: an initializer failed.
            RuntimeError: the pool was shut down.
        """
        with self._lock:
            if self._broken is not None:
                raise BrokenThreadPool(self._broken)
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not self._threads:
                for i in range(self._workers):
                    t = threading.Thread(
                        target=self._work, name=f"{self._prefix}_{i}", daemon=True
                    )
                    t.start()
                    self._threads.append(t)
            fut: Future[None] = Future()
            self._queue.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException:
                log.critical("Exception in initializer:", exc_info=True)
                self._break()
                return
        while (item := self._queue.get()) is not None:
            fut, fn, args = item
            if fut.set_running_or_notify_cancel():
                try:
                    fn(*args)
                except BaseException as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)
            del fut, fn, args
            item = None  # not kept alive while waiting for the next one
        self._queue.put(None)  # the next thread stops too

    def _break(self) -> None:
        with self._lock:
            self._broken = (
                "A thread initializer failed, the thread pool is not usable anymore"
            )
        self._drain(lambda fut: fut.set_exception(BrokenThreadPool(self._broken)))

    def _drain(self, settle: Callable[[Future[None]], object]) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._queue.put(None)
                return
            with contextlib.suppress(InvalidStateError):
                settle(item[0])

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the threads once their queue is done (or dropped, ``cancel_futures``)."""
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            self._drain(lambda fut: fut.cancel())
        self._queue.put(None)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()


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
    itself runs on to its end in its thread (a daemon thread, which does not hold up the
    interpreter's exit).
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
        self._pool = DaemonThreadPool(workers, "just_distribute-io", initializer, initargs)

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
