"""``job="io"``: a thread pool, for calls that wait on disks, sockets or subprocesses.

The pool is this module's own, not ``concurrent.futures.ThreadPoolExecutor``: that one
joins every thread at interpreter exit, so a call abandoned after Ctrl-C or a timeout
would hold the program's exit until it returns by itself. Here the threads are daemons and
a thread whose call was abandoned is *retired*: a fresh thread takes its place at once, and
the retired one ends when its call returns, holding nothing.
"""

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

__all__ = ["DaemonThreadPool", "ThreadExecutor", "pass_failure"]

log = logging.getLogger("just_distribute")

_Item = tuple[Future[None], Callable[..., None], tuple[Any, ...]]


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


class DaemonThreadPool:
    """Up to ``workers`` daemon threads taking work items from one queue.

    Args:
        workers: the most threads serving at once (retired threads do not count).
        name: the prefix of the threads' names.
        initializer: run once in each thread before its first item; if it raises, the pool
            is broken: queued and later items fail with ``BrokenThreadPool``.
        initargs: the arguments for ``initializer``.
    """

    def __init__(
        self,
        workers: int,
        name: str,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._max = workers
        self._name = name
        self._initializer = initializer
        self._initargs = initargs
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._serving: set[threading.Thread] = set()
        self._retired: set[threading.Thread] = set()
        self._count = 0
        self._broken: str | None = None
        self._closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        """Queue ``fn(*args)``; return a future of its end."""
        fut: Future[None] = Future()
        with self._lock:
            if self._broken is not None:
                fut.set_exception(BrokenThreadPool(self._broken))
                return fut
            if self._closed:
                raise RuntimeError("this thread pool has been shut down")
            self._queue.put((fut, fn, args))
            if not self._idle.acquire(blocking=False):
                self._grow()
        return fut

    def _grow(self) -> None:
        # (with the lock held)
        if len(self._serving) < self._max:
            self._count += 1
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}_{self._count}", daemon=True
            )
            self._serving.add(thread)
            thread.start()

    def retire(self, thread: threading.Thread) -> None:
        """``thread`` runs an abandoned call: replace it now; it ends when the call returns."""
        with self._lock:
            if thread not in self._serving:
                return
            self._serving.discard(thread)
            self._retired.add(thread)
            if not self._closed and self._broken is None:
                self._grow()

    def _break(self, why: str) -> None:
        with self._lock:
            self._broken = why
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                with contextlib.suppress(InvalidStateError):
                    item[0].set_exception(BrokenThreadPool(why))

    def _serve(self) -> None:
        me = threading.current_thread()
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException:
                log.exception("the initializer of thread %s raised", me.name)
                self._break("a thread initializer failed, the thread pool is not usable anymore")
                return
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # (wakes the next thread too)
                return
            fut, fn, args = item
            if fut.set_running_or_notify_cancel():
                try:
                    fn(*args)
                except BaseException as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)
            del item, fut, fn, args
            with self._lock:
                if me in self._retired:
                    self._retired.discard(me)
                    return
                if self._broken is not None:
                    return
            self._idle.release()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the threads; with ``wait``, join those not retired (never an abandoned one)."""
        with self._lock:
            self._closed = True
            serving = list(self._serving)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait:
            for thread in serving:
                # A thread may be retired while we wait (a withdrawn run's stuck call, given
                # up after its grace): from then on it no longer holds the shutdown.
                while thread.is_alive():
                    thread.join(0.1)
                    with self._lock:
                        if thread in self._retired:
                            break


class ThreadExecutor(Executor):
    """Runs chunks on a pool of ``workers`` threads, kept and reused across calls.

    A thread cannot be killed: on a timeout or Ctrl-C the caller stops waiting at once and
    a fresh thread takes the stuck one's place; the call itself runs on to its end in its
    (daemon) thread. A run that ends early stops its other chunks between two calls.
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
        self._pool = DaemonThreadPool(
            workers, "just_distribute-io", initializer=initializer, initargs=initargs
        )
        self._running: dict[ChunkFuture, threading.Thread] = {}

    def _run(self, task: Task, fut: ChunkFuture) -> None:
        run_in_thread(task, fut, self.name, self._running)

    def submit(self, task: Task) -> ChunkFuture:
        """Queue the chunk on the thread pool."""
        fut = ChunkFuture()
        self._pool.submit(self._run, task, fut).add_done_callback(
            lambda inner: pass_failure(inner, fut)
        )
        return fut

    def abandon(self, future: ChunkFuture) -> None:
        """Cancel a queued chunk; give a running one's thread up for a fresh one."""
        if future.cancel():
            return
        thread = self._running.get(future)
        if thread is not None:
            self._pool.retire(thread)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the threads (queued chunks are dropped)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def run_in_thread(
    task: Task, fut: ChunkFuture, job: str, running: dict[ChunkFuture, threading.Thread]
) -> None:
    """Run a chunk in the current pool thread, stopping early if its run was withdrawn."""
    if not fut.mark_started():
        return
    running[fut] = threading.current_thread()
    scope = task.run
    name = threading.current_thread().name
    try:
        result = run_chunk(
            task.payload.fn, task.columns, task.stop_on_error, name, job, False,
            task.channel(name), stopped=lambda: scope.cancelled,
        )
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
    finally:
        running.pop(fut, None)
