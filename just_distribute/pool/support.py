"""The moving parts behind :class:`~just_distribute.pool.Pool`.

The callables that carry a pool's calls (``starmap``, ``apply``, the initializer of process
jobs), the pool's executor wrapper (so that ``terminate()`` can fail whatever is running),
and the async results with the one thread that runs their callbacks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from just_distribute.calls import Initialized
from just_distribute.errors import JustDistributeError, PoolTerminatedError, SendError
from just_distribute.executors import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import ChunkResult
from just_distribute.planning import short_repr

if TYPE_CHECKING:
    from just_distribute.pool.pool import Pool

__all__ = [
    "Apply",
    "AsyncApply",
    "AsyncResult",
    "Initialized",
    "Notifier",
    "OwnedExecutor",
    "PoolTerminatedError",
    "Star",
    "AsyncStar",
    "check_apply",
    "stdlib_error",
    "Checked",
    "terminated",
]

log = logging.getLogger("just_distribute")

T = TypeVar("T")
JOIN_TIMEOUT = 30.0  # terminate() waits this long for its drivers: they stop within ~1 s


def terminated() -> PoolTerminatedError:
    return PoolTerminatedError(
        "the Pool was terminated (terminate(), the end of a with-block, or garbage "
        "collection) before this call finished; keep the pool open until you have its "
        "results, e.g. call get() inside the with-block"
    )


def check_apply(args: Any, kwds: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``apply``'s ``args`` and ``kwds``, checked: a tuple (or list) and a mapping."""
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"apply(): args must be a tuple of positional arguments, got "
            f"{type(args).__name__} {short_repr(args)}; write args=({short_repr(args)},)"
        )
    if kwds is None:
        kwds = {}
    if not isinstance(kwds, Mapping):
        raise TypeError(f"apply(): kwds must be a dict of keyword arguments, got {kwds!r}")
    return tuple(args), dict(kwds)




def stdlib_error(exc: BaseException) -> BaseException:
    """The error ``multiprocessing.Pool`` would raise for one of the machinery's.

    An argument (or function) that cannot be pickled raises the pickling error itself, with
    the explanation of the :class:`SendError` as a note.
    """
    cause = exc.__cause__
    if isinstance(exc, SendError) and cause is not None and not isinstance(
        cause, JustDistributeError
    ):
        notes = getattr(cause, "__notes__", ())
        for note in (f"just_distribute: {exc}", *getattr(exc, "__notes__", ())):
            if note not in notes:
                cause.add_note(note)
        return cause
    return exc


class Star:
    """``fn(*args)``: one call of ``starmap``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, args: Iterable[Any]) -> Any:
        return self.fn(*args)


class AsyncStar(Star):
    """:class:`Star` for an ``async def`` function on the web job."""

    async def __call__(self, args: Iterable[Any]) -> Any:
        return await self.fn(*args)


class Apply:
    """``fn(*args, **kwargs)`` for one ``(args, kwargs)`` pair: one call of ``apply``.

    The function travels once, in the payload; each call's arguments travel as data.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        return self.fn(*call[0], **call[1])


class AsyncApply(Apply):
    """:class:`Apply` for an ``async def`` function on the web job."""

    async def __call__(self, call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        return await self.fn(*call[0], **call[1])


class Checked(functools.partial[Any]):
    """``fn(*args)``, whose results must pickle with the standard pickle, as in multiprocessing.

    The transport would send back what only dill can pickle (a lambda, say); the standard
    library refuses it with ``MaybeEncodingError``, and so does a pool: the worker reads
    :attr:`standard_pickle_results` and encodes the chunk's results with the standard pickle
    only, making each result it cannot take the error of its own call (a
    :class:`~just_distribute.errors.ResultEncodingError`), so that the pool keeps working.
    Nothing is pickled twice: the check is the encoding itself.
    """

    # A partial without arguments: called at C speed, no frame of its own per call.
    standard_pickle_results = True


class _Mirror(ChunkFuture):
    """The pool's view of a chunk: ``terminate()`` can fail it whatever the backend does."""

    def __init__(self) -> None:
        self.inner: ChunkFuture | None = None
        super().__init__()

    @property
    def started_at(self) -> float | None:
        return None if self.inner is None else self.inner.started_at

    @started_at.setter
    def started_at(self, value: float | None) -> None:
        pass  # the backend's future keeps the start time

    def cancel(self) -> bool:
        if self.inner is not None:
            self.inner.cancel()
        return super().cancel()

    def follow(self, inner: ChunkFuture) -> None:
        self.inner = inner

        def copy(done: Future[ChunkResult]) -> None:
            with contextlib.suppress(InvalidStateError):  # failed or cancelled meanwhile
                if done.cancelled():
                    self.cancel()
                elif (exc := done.exception()) is not None:
                    self.set_exception(exc)
                else:
                    self.set_result(done.result())

        inner.add_done_callback(copy)


class OwnedExecutor(Executor):
    """The pool's executor: the backend's, plus a way to fail everything it has running."""

    def __init__(self, inner: Executor, owned: bool) -> None:
        self.inner = inner
        super().__init__(0)
        # The engine reads the backend's sizing hints from the executor it is given.
        vars(self).update(
            name=inner.name,
            remote=inner.remote,
            chunks_per_worker=inner.chunks_per_worker,
            in_flight_per_worker=inner.in_flight_per_worker,
            target_chunk_seconds=inner.target_chunk_seconds,
            awaits_coroutines=inner.awaits_coroutines,
            native_initializer=inner.native_initializer,
            recycles_workers=inner.recycles_workers,
            runs_inline=inner.runs_inline,
        )
        self.owned = owned
        self._lock = threading.Lock()
        self._live: set[_Mirror] = set()
        self._terminated = False
        self._shut = False

    @property
    def workers(self) -> int:
        """The backend's worker count (a cluster's may change as workers come and go)."""
        return self.inner.workers

    @workers.setter
    def workers(self, value: int) -> None:
        pass  # set by the base class; the backend's count rules

    def refresh(self) -> None:
        """The backend's count, brought up to date."""
        self.inner.refresh()

    def submit(self, task: Task) -> ChunkFuture:
        """Submit to the backend and hand back a future that terminate() can fail."""
        with self._lock:
            if self._terminated:
                raise terminated()
            outer = _Mirror()
            self._live.add(outer)
        outer.add_done_callback(self._forget)
        try:
            inner = self.inner.submit(task)
        except BaseException:
            self._forget(outer)
            raise
        outer.follow(inner)
        with self._lock:
            late = self._terminated
        if late:  # terminate() ran while this chunk was on its way: it did not see it
            self.inner.stop([inner])
        return outer

    def _forget(self, fut: Future[ChunkResult]) -> None:
        with self._lock:
            self._live.discard(fut)

    def abandon(self, future: ChunkFuture) -> None:
        """Abandon the backend's future (killing its worker where the backend can)."""
        if isinstance(future, _Mirror) and future.inner is not None:
            self.inner.abandon(future.inner)
        future.cancel()

    def fail_all(self) -> None:
        """Refuse new chunks; fail every chunk not finished, and stop it where it runs."""
        with self._lock:
            self._terminated = True
            live = list(self._live)
        for fut in live:
            with contextlib.suppress(InvalidStateError):
                fut.set_exception(terminated())
        # Queued chunks are dropped; running ones are stopped where the backend can (a
        # worker process is killed, a dask worker restarted), instead of running on.
        self.inner.stop([fut.inner for fut in live if fut.inner is not None])

    def shutdown(self, wait: bool = True) -> None:
        """Shut the backend down, once, if the pool made it."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if self.owned:
            self.inner.shutdown(wait=wait)
            log.info("job %r: stopped a pool of %s workers", self.name, self.workers)


class Notifier:
    """One thread that runs the callbacks and then marks results ready, in order.

    As in the standard library, callbacks run in a single thread of the pool: never on a
    worker, never on the web job's event loop.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[AsyncResult[Any], Any, BaseException | None] | None]
        self.queue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, result: AsyncResult[Any], value: Any, error: BaseException | None) -> None:
        with self._lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=_notify_loop, args=(self.queue,), name="just_distribute-pool-results",
                    daemon=True,
                )
                self.thread.start()
        self.queue.put((result, value, error))

    def in_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def stop(self) -> None:
        with self._lock:
            thread, self.thread = self.thread, None
        if thread is not None:
            self.queue.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=JOIN_TIMEOUT)


def _notify_loop(
    q: queue.SimpleQueue[tuple[AsyncResult[Any], Any, BaseException | None] | None],
) -> None:
    while (item := q.get()) is not None:
        item[0]._deliver(item[1], item[2])
        item = None  # not kept alive while waiting for the next one


class AsyncResult(Generic[T]):
    """The result of an ``*_async`` call, as ``multiprocessing.pool.AsyncResult``."""

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool: Pool | None = pool  # keeps the pool alive until the result is ready
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def ready(self) -> bool:
        """Whether the call has finished."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call finished without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, or ``timeout`` seconds have passed."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """The result, once ready; the call's exception is raised here.

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout`` seconds.
        """
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError(
                f"the result was not ready within timeout={timeout}s"
            )
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        self._value, self._error = value, error
        try:
            if error is None and self._callback is not None:
                self._callback(value)
            elif error is not None and self._error_callback is not None:
                self._error_callback(error)
        except Exception:
            log.exception("a Pool callback raised; the result is still delivered")
        finally:
            self._event.set()
            pool, self._pool = self._pool, None
            if pool is not None:
                pool._release()
