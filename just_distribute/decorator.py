"""``distribute()``: options → a :class:`Distributed` callable."""

from __future__ import annotations

import asyncio
import functools
import itertools
import types
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Generic, Literal, NamedTuple, TypedDict, TypeVar, overload

from typing_extensions import ParamSpec, Unpack

from just_distribute.calls import AsyncOneCall, OneCall, adapt
from just_distribute.config import Options, resolve_options
from just_distribute.engine import decorate_error, execute
from just_distribute.executors import Executor, Payload, RunScope, Task, canonical_job, executor_for
from just_distribute.executors import wire as _wire
from just_distribute.executors.base import is_async
from just_distribute.planning import FunctionInfo, Plan, analyse, make_plan
from just_distribute.progress import make_progress
from just_distribute.report import RunReport
from just_distribute.updates import Update, UpdateSink

__all__ = ["DistributeOptions", "Distributed", "RunResult", "distribute"]

P = ParamSpec("P")
R = TypeVar("R")


class DistributeOptions(TypedDict, total=False):
    """The keyword options of :func:`distribute` (see there for their meaning)."""

    job: Any
    workers: int
    address: str
    autobatch: bool
    batches: int
    flatten: bool
    chunksize: int
    max_in_flight: int
    timeout: float
    retries: int
    retry_on: tuple[type[BaseException], ...] | type[BaseException]
    backoff: float
    on_error: Literal["raise", "return"]
    progress: bool | Callable[[int, int | None], None]
    on_update: Callable[[Update], None]
    checkpoint: str
    initializer: Callable[..., object]
    initargs: tuple[Any, ...]
    connect_timeout: float
    tls: Any


class RunResult(NamedTuple):
    """What :meth:`Distributed.report` returns: the results and the run's report."""

    results: list[Any]
    report: RunReport


def _flatten(values: list[Any]) -> Any:
    if not values:
        return []
    first = values[0]
    kind = type(first)
    if kind.__module__ == "numpy" and kind.__name__ == "ndarray":
        import numpy as np

        tail, dtype = first.shape[1:], first.dtype
        if first.ndim == 0 or any(
            type(v) is not kind or v.dtype != dtype or v.shape[1:] != tail for v in values
        ):
            return np.concatenate(values)  # (its own promotion rules, or its error)
        # Part by part, each dropped once copied: a part that came back through shared
        # memory is unmapped at once, so the caller never holds the parts and the whole.
        out = np.empty((sum(len(v) for v in values), *tail), dtype)
        first = None  # (or the first part would stay mapped to the end)
        at = 0
        for i, part in enumerate(values):
            out[at : at + len(part)] = part
            at += len(part)
            values[i] = part = None
        return out
    if kind.__module__.startswith("pandas"):
        import pandas as pd

        return pd.concat(values)
    return list(itertools.chain.from_iterable(values))


def _load_bound(module: str, qualname: str, instance: object) -> Any:
    return types.MethodType(_wire.load_wrapped(module, qualname), instance)


def _new_distributed() -> Distributed[..., Any]:
    return Distributed.__new__(Distributed)


def _fill_distributed(obj: Distributed[..., Any], state: tuple[Any, dict[str, Any]]) -> None:
    Distributed.__init__(obj, state[0], state[1])


class Distributed(Generic[P, R]):
    """A function made parallel by :func:`distribute`.

    Calling it splits the positional arguments into calls (see the argument roles in the
    guide), runs them on the job's workers and returns the results in input order.

    Nested calls: a distributed function called inside a call of another one never
    deadlocks. Called from a worker of its *own* job (compute in compute, io in io, web in
    web), the inner call runs serially, in that worker, one call after another: the pool is
    busy with the outer calls, and a compute worker starts no processes of its own (so
    there is no "daemonic processes are not allowed to have children"). Called from a
    worker of *another* job (io in compute, compute in io), it runs on that job's pool, made
    where the outer call runs (a compute worker gets its own thread pool for io calls).
    Functions defined in ``__main__`` are sent to compute workers by value, and nest the same.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        options: Mapping[str, Any],
        *,
        info: FunctionInfo | None = None,
        instance: object = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.__wrapped__: Callable[P, R] = fn
        self._explicit = dict(options)
        resolved = resolve_options(self._explicit)  # fail at decoration on a bad option
        if isinstance(resolved.job, str):
            canonical_job(resolved.job)
        self._info = info if info is not None else analyse(fn)
        self._instance = instance
        self._method_info: FunctionInfo | None = None

    # -- plumbing --------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<distributed function {self._info.name} {self._explicit or ''}>".replace(
            " }", "}"
        )

    def __get__(self, instance: object, owner: type | None = None) -> Distributed[..., R]:
        if instance is None:
            return self
        if self._method_info is None:
            self._method_info = analyse(types.MethodType(self.__wrapped__, instance))
        bound: Callable[..., R] = types.MethodType(self.__wrapped__, instance)
        return Distributed(bound, self._explicit, info=self._method_info, instance=instance)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled, a decorated function is its original function: a worker that receives
        # it runs the plain function instead of recursing into a pool.
        target = self.__wrapped__
        if self._instance is not None:
            func = target.__func__  # type: ignore[attr-defined]
            return (_load_bound, (func.__module__, func.__qualname__, self._instance))
        if target.__module__ == "__main__" or "<" in target.__qualname__:
            # A worker cannot import it: send it by value, as a decorated function again,
            # so that a nested call runs as it would from an importable module (serially,
            # in the worker). The state is set after the object exists: recursion is fine.
            return (_new_distributed, (), (target, self._explicit), None, None, _fill_distributed)
        return (_wire.load_wrapped, (target.__module__, target.__qualname__))

    def with_options(self, **options: Unpack[DistributeOptions]) -> Distributed[P, R]:
        """A copy of this distributed function with some options changed."""
        return Distributed(
            self.__wrapped__, {**self._explicit, **options}, info=self._info,
            instance=self._instance,
        )

    def _callable(self) -> Callable[..., Any]:
        # A bound method pickles as ``getattr(instance, name)``, which a worker would resolve
        # to this decorated object again; a partial of the plain function pickles by value.
        fn: Callable[..., Any] = self.__wrapped__
        if self._instance is not None and isinstance(fn, types.MethodType):
            return functools.partial(fn.__func__, self._instance)
        return fn

    def _setup(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], materialize: bool
    ) -> tuple[Plan, Options, Executor | None]:
        options = resolve_options(self._explicit)
        chosen: list[tuple[Executor, bool]] = []

        def executor() -> Executor:
            if not chosen:
                chosen.append(executor_for(options))
            return chosen[0][0]

        def workers() -> int:
            return executor().workers or 1

        plan = make_plan(
            self._info, self._callable(), args, kwargs, workers=workers,
            autobatch=options.autobatch, batches=options.batches, flatten=options.flatten,
            materialize=materialize,
        )
        if plan.n == 0:
            return plan, options, None
        ex = executor()
        # The checkpoint's key sees through these wrappers to the function itself.
        plan.fn = adapt(plan.fn, ex, options.initializer, options.initargs, chosen[0][1])
        return plan, options, ex

    def _chunks(
        self, plan: Plan, options: Options, ex: Executor, ordered: bool, report: RunReport | None
    ) -> Iterator[list[Any]]:
        checkpoint = None
        if options.checkpoint is not None:
            from just_distribute.checkpoint import open_checkpoint

            checkpoint = open_checkpoint(options.checkpoint, self.__wrapped__, plan)
        # The bar last: nothing may fail between its creation and the engine that closes it.
        unit = "element" if plan.batch_columns else "call"
        progress = make_progress(options.progress, plan.total_units, self._info.name, unit)
        return execute(
            plan, options, ex, ordered=ordered, report=report, progress=progress,
            checkpoint=checkpoint,
        )

    def _collect(self, args: tuple[Any, ...], kwargs: dict[str, Any], report: bool) -> RunResult:
        plan, options, ex = self._setup(args, kwargs, materialize=True)
        job = ex.name if ex is not None else str(options.job)
        rep = RunReport(self._info.name, job, ex.workers if ex is not None else 0)
        if ex is None:
            return RunResult([], rep)
        values: list[Any] = []
        for part in self._chunks(plan, options, ex, True, rep if report else None):
            values.extend(part)
        part = []  # (the last chunk's list would keep its results alive through _flatten)
        return RunResult(_flatten(values) if plan.flatten else values, rep)

    # -- the public methods ----------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Run the calls and return their results in input order.

        Positional arguments are distributed (one item, or one batch, per call); keyword
        arguments are passed whole to every call.

        Raises:
            TypeError: the arguments do not bind, or a distributed one is not iterable.
            ValueError: the distributed arguments' lengths do not fit together.
        """
        return self._collect(args, kwargs, report=False).results

    def report(self, *args: Any, **kwargs: Any) -> RunResult:
        """Like calling the function, but also return the run's :class:`RunReport`.

        Safe when the same function runs in several threads at once: each call gets its
        own report.

        Example:
            ``results, report = f.report(data); print(report)``
        """
        return self._collect(args, kwargs, report=True)

    def iter(self, *args: Any, ordered: bool = True, **kwargs: Any) -> Iterator[Any]:
        """Yield results as they become ready: in input order, or with ``ordered=False``
        in completion order.

        Only a bounded number of calls is in flight (``max_in_flight`` chunks), so an
        endless generator streams through in constant memory. Bad arguments raise here,
        at once, not at the first ``next()``.
        """
        plan, options, ex = self._setup(args, kwargs, materialize=False)

        def stream() -> Iterator[Any]:
            if ex is None:
                return
            for part in self._chunks(plan, options, ex, ordered, None):
                if plan.flatten:
                    for value in part:
                        yield from value
                else:
                    yield from part

        return stream()

    async def acall(self, *args: Any, **kwargs: Any) -> list[Any]:
        """The awaitable form, for async callers: ``results = await f.acall(items)``."""
        return await asyncio.to_thread(self.__call__, *args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run one plain call ``fn(*args, **kwargs)`` on the job; return its future.

        Nothing is distributed: the arguments go to the function as they are.
        """
        self._info.signature.bind(*args, **kwargs)
        options = resolve_options(self._explicit)
        ex, native = executor_for(options)
        target = adapt(self._callable(), ex, options.initializer, options.initargs, native)
        maker = AsyncOneCall if is_async(target) else OneCall
        call = maker(target, tuple(args), dict(kwargs))
        # No engine loop here to dispatch updates: they are dispatched as they arrive.
        sink = UpdateSink(self._info.name, on_update=options.on_update)
        inner = ex.submit(
            Task(Payload(call, self._info.name), ([None],), True, RunScope(), sink.receiver(0))
        )
        out: Future[R] = Future()
        out.set_running_or_notify_cancel()
        name = self._info.name

        def done(f: Future[Any]) -> None:
            if f.cancelled():
                out.cancel()
                return
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            result = f.result()
            if result.errors:
                err = result.errors[0]
                out.set_exception(decorate_error(err.exc, err.tb, 0, name, "submitted call"))
            else:
                out.set_result(result.values[0])

        inner.add_done_callback(done)
        return out


@overload
def distribute(fn: Callable[P, R], /) -> Distributed[P, R]: ...


@overload
def distribute(
    fn: None = None, /, **options: Unpack[DistributeOptions]
) -> Callable[[Callable[P, R]], Distributed[P, R]]: ...


def distribute(
    fn: Callable[P, R] | None = None, /, **options: Unpack[DistributeOptions]
) -> Distributed[P, R] | Callable[[Callable[P, R]], Distributed[P, R]]:
    """Make a function parallel: ``@distribute`` or ``@distribute(job=..., workers=...)``.

    Args:
        fn: the function (when used bare, as ``@distribute``).
        **options: any of:

            - ``job``: where calls run: ``"compute"`` (processes, the default), ``"io"``
              (threads), ``"web"`` (asyncio), ``"cluster"`` (dask), ``"serial"``; or a
              ``concurrent.futures.Executor`` or dask ``Client``.
            - ``workers``: how many workers (default: per job).
            - ``address``: the dask scheduler of ``job="cluster"``.
            - ``autobatch``: cut flat collections for batch parameters (default True).
            - ``batches``: how many batches to cut (default: one per worker).
            - ``flatten``: concatenate per-call results into one list.
            - ``chunksize``: calls sent together (default: chosen from the input).
            - ``max_in_flight``: chunks handed out before waiting (default: 2 per worker).
            - ``timeout``: seconds one call may run, else
              :class:`~just_distribute.errors.CallTimeoutError` (a ``TimeoutError``) naming
              the call. On compute the stuck worker process is killed and replaced; on io
              the caller stops waiting at once and a fresh thread takes the stuck one's
              place (a thread cannot be killed); on web the coroutine is cancelled. Not
              with ``chunksize`` above 1 (refused: a timeout bounds each call).
            - ``retries``, ``retry_on``, ``backoff``: retry a failing call up to ``retries``
              times if its exception is one of ``retry_on`` (default: any ``Exception``,
              including a lost worker), waiting ``backoff * 2**(attempt - 1)`` seconds.
            - ``on_error``: ``"raise"`` (default) or ``"return"`` (exceptions as results).
            - ``progress``: ``True`` for a progress bar, or a callable ``fn(done, total)``.
              The bar also shows the latest values the calls publish with
              :func:`~just_distribute.update`.
            - ``on_update``: called with each :class:`~just_distribute.Update` a call
              publishes with :func:`~just_distribute.update`, while the run goes on, in the
              caller's thread, in order per call (a single :meth:`Distributed.submit` call:
              in a helper thread of the caller's process). If it raises, the run stops
              with its error, as with a ``progress`` callable.
            - ``checkpoint``: a directory where finished results are recorded durably, one
              file per chunk, keyed by the function's code and constants and the chunk's
              inputs; a rerun after a crash runs only the calls without a record (see
              :mod:`just_distribute.checkpoint`).
            - ``initializer``, ``initargs``: run once in each worker before its first call.
            - ``connect_timeout``: seconds to wait for a cluster (default 10).
            - ``tls``: TLS settings for the cluster.

    Returns:
        A :class:`Distributed` (or, with options only, a decorator making one).

    Raises:
        ValueError: an unknown job, ``job="ray"``, ``workers < 1`` or another bad option.
    """
    if fn is not None:
        if not callable(fn):
            raise TypeError(
                f"distribute() takes a function, got {type(fn).__name__}; use "
                f"@distribute or @distribute(job=..., workers=...)"
            )
        return Distributed(fn, options)

    resolved = resolve_options(dict(options))
    if isinstance(resolved.job, str):
        canonical_job(resolved.job)

    def wrap(f: Callable[P, R]) -> Distributed[P, R]:
        return Distributed(f, options)

    return wrap
