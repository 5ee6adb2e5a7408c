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
  calls still in flight are cancelled. ``map`` lets every call run, then raises the error
  of the first one that failed, as the standard library does.
- ``apply_async`` calls made while the workers are busy travel to them together, so a loop
  of thousands of them costs few round trips (see :mod:`just_distribute.pool.feed`); with
  ``maxtasksperchild`` each travels alone, so that a task is one call, as in the standard
  library.
- ``terminate()`` fails every pending result with :class:`PoolTerminatedError` instead of
  leaving it unready forever, and stops the calls still running where the job can (worker
  processes are killed, dask workers running a stopped task are restarted; threads cannot
  be stopped, but they are daemon threads and do not hold up the interpreter's exit).
- On process jobs (compute, cluster) the ``initializer`` runs before the first call in
  each worker process, with the globals of a ``__main__`` script shared with the
  functions, so ``global model; model = load()`` works as it does with ``multiprocessing``.
- On the serial job every method runs in the caller's thread, ``imap`` as it is read.
- ``maxtasksperchild`` is honoured on compute: a worker process is replaced after that many
  tasks (chunks, as in ``multiprocessing``). Other jobs accept it and log that it is ignored.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from just_distribute.calls import adapt
from just_distribute.config import Options, ProgressOption, resolve_options
from just_distribute.engine import execute
from just_distribute.executors import executor_for, owned_executor
from just_distribute.executors.base import is_async
from just_distribute.planning import Plan
from just_distribute.pool.feed import ApplyRuns
from just_distribute.pool.stream import IMapIterator, InlineStream, Stream, produce
from just_distribute.pool.support import (
    JOIN_TIMEOUT,
    Apply,
    AsyncApply,
    AsyncResult,
    AsyncStar,
    Checked,
    Notifier,
    OwnedExecutor,
    PoolTerminatedError,
    Star,
    check_apply,
    stdlib_error,
    terminated,
)
from just_distribute.progress import make_progress
from just_distribute.updates import Update

__all__ = ["AsyncResult", "IMapIterator", "Pool", "PoolTerminatedError"]

log = logging.getLogger("just_distribute")

T = TypeVar("T")
_TARGET_CACHE = 32  # functions whose wrapped apply() target is kept


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
        context: accepted for compatibility and unused: compute workers are always fresh
            interpreters (as with the ``"spawn"`` context).
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
        context: object | None = None,
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
        self._max_tasks = inner.max_tasks
        # apply: each call's error is its own (returned in its place, not raised for the
        # run); a task is one call where workers are recycled after maxtasksperchild tasks.
        self._apply_options = options.replace(
            on_error="return",
            chunksize=1 if self._max_tasks is not None else options.chunksize,
        )
        self._state = "RUN"
        self._cond = threading.Condition()
        self._active = 0
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._notifier = Notifier()
        self._targets: dict[Callable[..., Any], Callable[..., Any]] = {}
        self._applies = ApplyRuns(self._executor, self._notifier, stdlib_error)
        self._finalizer = weakref.finalize(
            self, _finalize, self._executor, self._notifier, self._applies
        )

    def __repr__(self) -> str:
        return (
            f"<just_distribute.Pool state={self._state} job={self._executor.name} "
            f"workers={self._processes}>"
        )

    def __del__(self) -> None:
        # As the standard library's: a pool dropped while running leaks its workers until
        # the collector gets to it (the finalizer then stops them).
        if getattr(self, "_state", None) == "RUN":
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                stacklevel=2, source=self,
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

    def _strict(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Where results travel, only what the standard pickle takes (MaybeEncodingError)."""
        return Checked(fn) if self._executor.remote and not is_async(fn) else fn

    def _apply_target(self, func: Callable[..., Any]) -> tuple[Any, Callable[..., Any]]:
        """The key of ``func``'s apply run and the callable that runs one of its calls."""
        with self._cond:
            try:
                target = self._targets.get(func)
                key: Any = func
            except TypeError:  # unhashable callable: a run of its own for each call
                target, key = None, object()
        if target is None:
            wrapped = self._wrap(func)
            target = AsyncApply(wrapped) if is_async(wrapped) else self._strict(Apply(wrapped))
            if key is func:
                with self._cond:
                    if len(self._targets) >= _TARGET_CACHE:
                        del self._targets[next(iter(self._targets))]
                    self._targets[func] = target
        return key, target

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
        fn = self._strict(fn)
        n = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        return Plan(fn, _name(func), ["args" if star else "item"], [iterable], n, total_units=n)

    def _run(self, plan: Plan, chunksize: int | None, ordered: bool,
             progress: ProgressOption) -> Iterator[list[Any]]:
        options = self._options.replace(chunksize=chunksize)
        display = make_progress(progress, plan.total_units, plan.name, "call")
        return execute(plan, options, self._executor, ordered=ordered, progress=display)

    def _collect(self, plan: Plan, chunksize: int | None, progress: ProgressOption) -> list[Any]:
        """Run every call of a ``map``, then raise the first failure, as the stdlib does.

        The engine returns each error in its call's place (``on_error="return"``), so a
        failed call stops nothing else; retries still apply first.
        """
        n = plan.n or 0
        values: list[Any] = [None] * n
        first: list[tuple[int, BaseException]] = []

        def sink(start: int, part: list[Any], errors: list[int]) -> None:
            values[start : start + len(part)] = part
            if errors and (not first or start + errors[0] < first[0][0]):
                first[:] = [(start + errors[0], part[errors[0]])]

        if n:
            options = self._options.replace(chunksize=chunksize, on_error="return")
            display = make_progress(progress, plan.total_units, plan.name, "call")
            for _ in execute(plan, options, self._executor, progress=display, sink=sink):
                pass
        if first:
            values.clear()
            raise stdlib_error(first[0][1])
        return values

    # -- map and starmap -------------------------------------------------------------
    def _map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None,
             star: bool, progress: ProgressOption) -> list[Any]:
        plan = self._plan(func, iterable, star, materialize=True)
        self._begin()
        try:
            return self._collect(plan, chunksize, progress)
        except BaseException as exc:
            translated = stdlib_error(exc)
            if translated is exc:
                raise
            raise translated from None  # the pickling error itself, as the stdlib raises
        finally:
            self._release()

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, callback: Callable[[list[Any]], object] | None,
                   error_callback: Callable[[BaseException], object] | None, star: bool,
                   progress: ProgressOption) -> AsyncResult[list[Any]]:
        plan = self._plan(func, iterable, star, materialize=True)
        self._begin()
        result: AsyncResult[list[Any]] = AsyncResult(self, callback, error_callback)
        notifier = self._notifier

        def drive() -> None:
            try:
                values = self._collect(plan, chunksize, progress)
            except BaseException as exc:
                notifier.post(result, None, stdlib_error(exc))
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
        call_args, call_kwds = check_apply(args, kwds)
        key, target = self._apply_target(func)
        self._begin()
        result: AsyncResult[T] = AsyncResult(self, callback, error_callback)
        self._applies.put(
            key, target, _name(func), (call_args, call_kwds), self._apply_options, result
        )
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


def _finalize(executor: OwnedExecutor, notifier: Notifier, applies: ApplyRuns) -> None:
    """Release a pool's workers (terminate(), join(), garbage collection, exit)."""
    applies.close()
    executor.fail_all()
    notifier.stop()
    # Worker processes are killed and reaped; a thread cannot be killed, so waiting for
    # one would make terminate() as slow as the slowest call still running.
    executor.shutdown(wait=executor.remote)
