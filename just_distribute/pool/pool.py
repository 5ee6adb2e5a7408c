"""``Pool``: a drop-in for ``multiprocessing.Pool`` that runs on any job.

``from just_distribute import Pool`` in place of ``from multiprocessing import Pool`` keeps
the methods and their semantics, and adds: every job (``compute``, ``io``, ``web``,
``cluster``, ``serial``), lambdas and closures on worker processes, ``imap`` that streams
an endless generator in bounded memory, and errors that name the failed call.

Differences worth knowing, each deliberate:

- ``imap``/``imap_unordered`` read the input lazily and keep a bounded number of calls in
  flight (the standard library reads the whole input at once). Their default ``chunksize``
  is chosen by the engine from measured call times instead of 1.
- ``imap`` yields the results before a failed call, then raises its error and ends: the
  calls still in flight are cancelled.
- ``apply_async`` calls made while the workers are busy travel to them together, so a loop
  of thousands of them costs few round trips (see :mod:`just_distribute._pool_apply`).
- ``terminate()`` fails every pending result with :class:`PoolTerminatedError` instead of
  leaving it unready forever, and stops the calls still running where the job can (worker
  processes are killed; threads cannot be).
- On process jobs (compute, cluster) the ``initializer`` runs before the first call in
  each worker process, with the globals of a ``__main__`` script shared with the
  functions, so ``global model; model = load()`` works as it does with ``multiprocessing``.
- On the serial job every method runs in the caller's thread, ``imap`` as it is read.
- ``maxtasksperchild`` is honoured on compute: a worker process is replaced after that many
  tasks (chunks, as in ``multiprocessing``). Other jobs accept it and log that it is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from just_distribute.calls import adapt
from just_distribute.config import Options, ProgressOption, resolve_options
from just_distribute.engine import decorate_error, execute
from just_distribute.executors import Payload, executor_for, owned_executor
from just_distribute.executors.base import is_async
from just_distribute.planning import Plan, short_repr
from just_distribute.pool.apply import ApplyQueue
from just_distribute.pool.stream import IMapIterator, InlineStream, Stream, produce
from just_distribute.pool.support import (
    JOIN_TIMEOUT,
    Apply,
    AsyncApply,
    AsyncResult,
    AsyncStar,
    Notifier,
    OwnedExecutor,
    PoolTerminatedError,
    Star,
    terminated,
)
from just_distribute.progress import make_progress
from just_distribute.updates import Update, UpdateSink

__all__ = ["AsyncResult", "IMapIterator", "Pool", "PoolTerminatedError"]

log = logging.getLogger("just_distribute")

T = TypeVar("T")
_PAYLOAD_CACHE = 32  # functions whose apply() payload is kept (each is sent once per worker)


def _check_apply(args: Any, kwds: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class Pool:
    """A drop-in for ``multiprocessing.Pool`` that runs on any job.

    The pool owns its workers: they start with the pool (worker processes on their first
    task) and stop at :meth:`terminate`, at :meth:`close` + :meth:`join`, at the end of a
    ``with`` block, or when the pool is garbage collected. The one exception is the
    embedded cluster of ``job="cluster"`` without ``address``, shared with every
    distributed function because it takes seconds to start. ``config()`` settings such as
    ``max_in_flight``, ``timeout`` and ``retries`` in force when the pool is made apply to
    its runs; errors are always raised, as in the standard library.

    Args:
        processes: the number of workers (default: the job's default). On the cluster job
            it sizes the embedded cluster; a cluster at ``address`` has its own size.
        initializer: called as ``initializer(*initargs)`` once in each worker before its
            first task: each worker process (compute, cluster), thread (io), consumer (web,
            awaited if it is a coroutine function; each thread for plain functions), or the
            caller's thread (serial). If it raises, nothing hangs: on process jobs and web
            consumers the waiting call fails with its error (the next call tries again); a
            thread pool is broken for good, as in ``concurrent.futures``, and its calls
            fail with ``BrokenThreadPool``; on serial, ``Pool()`` raises it.
        initargs: the arguments for ``initializer``.
        maxtasksperchild: on compute, replace a worker process after it has run this many
            tasks (a task is a chunk, as in ``multiprocessing``: pass ``chunksize=1`` to count
            calls), for code that leaks memory; other jobs log that it is ignored.
        job: where calls run: ``"compute"``, ``"io"``, ``"web"``, ``"cluster"``,
            ``"serial"``, or a ``concurrent.futures.Executor`` or dask ``Client`` (used as
            it is and not shut down by the pool).
        address: the dask scheduler of ``job="cluster"``.
        on_update: called with each :class:`~just_distribute.Update` that a call publishes
            with :func:`~just_distribute.update`, while it runs, in the thread that runs the
            pool's loop for that task (the caller's for ``map``); updates also go to the
            ``just_distribute`` logger at DEBUG.

    Raises:
        ValueError: ``processes < 1``, an unknown job, or a bad ``maxtasksperchild``.
        TypeError: ``initializer`` is not callable.

    Example:
        >>> from just_distribute import Pool
        >>> with Pool(2, job="io") as pool:
        ...     pool.map(abs, [-1, -2, 3])
        [1, 2, 3]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        job: Any = "compute",
        address: str | None = None,
        on_update: Callable[[Update], None] | None = None,
    ) -> None:
        if processes is not None and (isinstance(processes, bool) or processes < 1):
            raise ValueError(f"Pool(processes={processes!r}): the number of workers must be >= 1")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"Pool(initializer=...) must be callable, got {initializer!r}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        explicit: dict[str, Any] = {"job": job, "initargs": tuple(initargs)}
        if processes is not None:
            explicit["workers"] = processes
        if address is not None:
            explicit["address"] = address
        if on_update is not None:
            explicit["on_update"] = on_update
        if initializer is not None:
            explicit["initializer"] = initializer
        # Errors follow multiprocessing: the first one is raised, never returned as a value.
        self._options: Options = resolve_options(explicit).replace(on_error="raise")
        options = self._options
        # A job given by name gets workers of the pool's own; an executor object (or a dask
        # Client) passed as job= is used as it is and not shut down by the pool.
        owned = isinstance(options.job, str)
        if owned:
            inner, self._native = owned_executor(options, maxtasksperchild)
        else:
            inner, self._native = executor_for(options)
        self._executor = OwnedExecutor(inner, owned)
        self._processes = inner.workers
        self._state = "RUN"
        self._cond = threading.Condition()
        self._active = 0
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._notifier = Notifier()
        self._payloads: dict[Callable[..., Any], Payload] = {}
        self._applies = ApplyQueue(
            self._executor, self._notifier, _note_call, UpdateSink("apply", on_update=on_update)
        )
        self._finalizer = weakref.finalize(
            self, _finalize, self._executor, self._notifier, self._applies
        )

    def __repr__(self) -> str:
        return (
            f"<just_distribute.Pool state={self._state} job={self._executor.name} "
            f"workers={self._processes}>"
        )

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    # -- bookkeeping -----------------------------------------------------------------
    def _begin(self) -> None:
        with self._cond:
            if self._state != "RUN":
                how = "closed" if self._state == "CLOSE" else "terminated"
                raise ValueError(
                    f"Pool not running: it was {how}; create a new Pool to submit more work"
                )
            self._active += 1

    def _release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        o = self._options
        return adapt(func, self._executor, o.initializer, o.initargs, self._native)

    def _apply_payload(self, func: Callable[..., Any]) -> Payload:
        """The payload of ``apply`` calls of ``func``: made, and sent to a worker, once."""
        with self._cond:
            try:
                payload = self._payloads.get(func)
            except TypeError:  # unhashable callable: no caching
                payload = None
        if payload is None:
            target = self._wrap(func)
            payload = Payload(AsyncApply(target) if is_async(target) else Apply(target),
                              _name(func))
            with self._cond, contextlib.suppress(TypeError):
                if len(self._payloads) >= _PAYLOAD_CACHE:
                    del self._payloads[next(iter(self._payloads))]
                self._payloads[func] = payload
        return payload

    def _plan(self, func: Callable[..., Any], iterable: Iterable[Any], star: bool,
              materialize: bool) -> Plan:
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__} {func!r}")
        if materialize and not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        else:
            iter(iterable)  # not iterable: TypeError here, in the caller
        fn = self._wrap(func)
        if star:
            fn = AsyncStar(fn) if is_async(fn) else Star(fn)
        n = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        return Plan(fn, _name(func), ["args" if star else "item"], [iterable], n, total_units=n)

    def _run(self, plan: Plan, chunksize: int | None, ordered: bool,
             progress: ProgressOption) -> Iterator[list[Any]]:
        options = self._options.replace(chunksize=chunksize)
        display = make_progress(progress, plan.total_units, plan.name, "call")
        return execute(plan, options, self._executor, ordered=ordered, progress=display)

    # -- map and starmap -------------------------------------------------------------
    def _map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None,
             star: bool, progress: ProgressOption) -> list[Any]:
        plan = self._plan(func, iterable, star, materialize=True)
        self._begin()
        try:
            values: list[Any] = []
            if plan.n:
                for part in self._run(plan, chunksize, True, progress):
                    values.extend(part)
            return values
        finally:
            self._release()

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, callback: Callable[[list[Any]], object] | None,
                   error_callback: Callable[[BaseException], object] | None, star: bool,
                   progress: ProgressOption) -> AsyncResult[list[Any]]:
        plan = self._plan(func, iterable, star, materialize=True)
        self._begin()
        result: AsyncResult[list[Any]] = AsyncResult(self, callback, error_callback)
        run = self._run(plan, chunksize, True, progress) if plan.n else iter(())
        notifier = self._notifier

        def drive() -> None:
            values: list[Any] = []
            try:
                for part in run:
                    values.extend(part)
            except BaseException as exc:
                notifier.post(result, None, exc)
            else:
                notifier.post(result, values, None)

        if self._executor.runs_inline:
            drive()  # the caller's thread is the one worker (pdb, profilers)
        else:
            threading.Thread(target=drive, name="just_distribute-pool-map", daemon=True).start()
        return result

    def map(self, func: Callable[[Any], T], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: ProgressOption = False) -> list[T]:
        """``[func(x) for x in iterable]``, in parallel, in input order.

        Args:
            func: the function.
            iterable: the inputs (read whole first, as the standard library does).
            chunksize: calls sent to a worker together (default: chosen from the input).
            progress: ``True`` for a progress bar, or a callable ``fn(done, total)``.

        Raises:
            ValueError: the pool is closed.
            Exception: the first exception raised by a call, with a note naming it.
        """
        return self._map(func, iterable, chunksize, False, progress)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: ProgressOption = False) -> list[T]:
        """``[func(*args) for args in iterable]``, in parallel, in input order."""
        return self._map(func, iterable, chunksize, True, progress)

    def map_async(self, func: Callable[[Any], T], iterable: Iterable[Any],
                  chunksize: int | None = None,
                  callback: Callable[[list[T]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None, *,
                  progress: ProgressOption = False) -> AsyncResult[list[T]]:
        """:meth:`map` without waiting: returns an :class:`AsyncResult` at once.

        ``callback(results)`` or ``error_callback(exception)`` runs in the pool's result
        thread when the run ends, before the result becomes ready.
        """
        return self._map_async(func, iterable, chunksize, callback, error_callback, False,
                               progress)

    def starmap_async(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[T]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None, *,
                      progress: ProgressOption = False) -> AsyncResult[list[T]]:
        """:meth:`starmap` without waiting: returns an :class:`AsyncResult` at once."""
        return self._map_async(func, iterable, chunksize, callback, error_callback, True,
                               progress)

    # -- streaming -------------------------------------------------------------------
    def _imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None,
              ordered: bool, progress: ProgressOption) -> IMapIterator[T]:
        plan = self._plan(func, iterable, False, materialize=False)
        self._begin()
        run = self._run(plan, chunksize, ordered, progress)
        stream: Stream
        if self._executor.runs_inline:
            stream = InlineStream(run, self._release)  # the caller's thread runs the calls
        else:
            stream = Stream(limit=1)
            threading.Thread(
                target=produce, args=(stream, run, self._release),
                name="just_distribute-pool-imap", daemon=True,
            ).start()
        self._streams.add(stream)
        return IMapIterator(stream, self)

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any],
             chunksize: int | None = None, *, progress: ProgressOption = False
             ) -> IMapIterator[T]:
        """Results of ``func`` over ``iterable`` in input order, as they become ready.

        The input is read lazily and only a bounded number of calls is in flight (the
        engine's window, ``max_in_flight`` chunks, plus two chunks handed over), so an
        endless generator streams through in constant memory.
        """
        return self._imap(func, iterable, chunksize, True, progress)

    def imap_unordered(self, func: Callable[[Any], T], iterable: Iterable[Any],
                       chunksize: int | None = None, *, progress: ProgressOption = False
                       ) -> IMapIterator[T]:
        """Like :meth:`imap`, but results come in completion order."""
        return self._imap(func, iterable, chunksize, False, progress)

    # -- single calls ----------------------------------------------------------------
    def apply_async(self, func: Callable[..., T], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] | None = None,
                    callback: Callable[[T], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None
                    ) -> AsyncResult[T]:
        """Run ``func(*args, **kwds)`` on a worker; return an :class:`AsyncResult` at once.

        Raises:
            TypeError: ``args`` is not a tuple (or list), or ``kwds`` not a mapping.
            ValueError: the pool is closed.
        """
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__} {func!r}")
        call_args, call_kwds = _check_apply(args, kwds)
        payload = self._apply_payload(func)
        self._begin()
        result: AsyncResult[T] = AsyncResult(self, callback, error_callback)
        self._applies.put(payload, (call_args, call_kwds), result)
        return result

    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] | None = None) -> T:
        """Run ``func(*args, **kwds)`` on a worker and return its result.

        Raises:
            TypeError: ``args`` is not a tuple (``apply(f, 3)``: write ``apply(f, (3,))``).
            ValueError: the pool is closed.
        """
        return self.apply_async(func, args, kwds).get()

    # -- life cycle ------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; what was submitted runs on. Call :meth:`join` next."""
        with self._cond:
            if self._state == "RUN":
                self._state = "CLOSE"

    def terminate(self) -> None:
        """Stop now: pending results fail with :class:`PoolTerminatedError`, workers stop."""
        with self._cond:
            self._state = "TERMINATE"
        self._applies.close()
        self._executor.fail_all()
        for stream in list(self._streams):
            stream.abort(terminated())
        if not self._notifier.in_thread():
            with self._cond:
                self._cond.wait_for(lambda: self._active == 0, timeout=JOIN_TIMEOUT)
        self._finalizer()

    def join(self) -> None:
        """Wait until all submitted work has finished, then stop the workers.

        ``imap`` iterators not yet read to their end buffer their remaining results.

        Raises:
            ValueError: the pool is still running (call :meth:`close` or :meth:`terminate`
                first).
        """
        with self._cond:
            if self._state == "RUN":
                raise ValueError("Pool is still running: call close() or terminate() first")
        for stream in list(self._streams):
            stream.set(unbounded=True)
        if not self._notifier.in_thread():
            with self._cond:
                self._cond.wait_for(lambda: self._active == 0)
        self._finalizer()

    def __enter__(self) -> Pool:
        with self._cond:
            if self._state != "RUN":
                raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()


def _note_call(exc: BaseException, tb: str | None, name: str, call: str) -> BaseException:
    return decorate_error(exc, tb, 0, name, call)


def _finalize(executor: OwnedExecutor, notifier: Notifier, applies: ApplyQueue) -> None:
    """Release a pool's workers (terminate(), join(), garbage collection, exit)."""
    applies.close()
    executor.fail_all()
    notifier.stop()
    # Worker processes are killed and reaped; a thread cannot be killed, so waiting for
    # one would make terminate() as slow as the slowest call still running.
    executor.shutdown(wait=executor.remote)
