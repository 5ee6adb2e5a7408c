"""``apply_async`` through the engine: a run per function, fed by a queue of calls.

The engine is the one dispatch loop (window, chunking, retries, timeouts, isolating the call
that killed a worker, error notes). Single calls reach it through a
:class:`~just_distribute.planning.CallFeed`: the first ``apply_async`` of a function starts
a run on a thread of its own; later calls join the run's feed; the run routes each finished
chunk's values to their results and ends when its feed has been empty with nothing in
flight, so an idle pool keeps no thread. Calls that arrive while the window is full wait in
the feed and travel together in the engine's next chunk.

::

    apply_async ──put──▶ CallFeed ──take──▶ engine.execute ──chunks──▶ executor
         ▲                                        │
         └── AsyncResult ◀── Notifier ◀── sink(start, values, errors)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from just_distribute.config import Options
from just_distribute.engine import execute
from just_distribute.executors import Executor
from just_distribute.planning import CallFeed, Plan, short_repr
from just_distribute.pool.support import AsyncResult, Notifier, terminated

__all__ = ["ApplyPlan", "ApplyRuns", "describe_apply"]

#: One call of ``apply``: its positional and keyword arguments.
Call = tuple[tuple[Any, ...], dict[str, Any]]


def describe_apply(call: Call) -> str:
    """``1, 2, b=3`` for the arguments of one ``apply`` call."""
    args, kwargs = call
    return ", ".join(
        [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()]
    )


class ApplyPlan(Plan):
    """The plan of ``apply`` calls: one column of ``(args, kwargs)`` pairs."""

    def describe_call(self, columns: Sequence[Sequence[Any]], j: int) -> str:
        """The call's arguments as they were written: ``f(1, b=2)``, not ``call=(...)``."""
        call: Call = columns[0][j]
        return describe_apply(call)


class _Run:
    """One engine run of one function's ``apply`` calls."""

    def __init__(self, runs: ApplyRuns, key: Any, fn: Callable[..., Any], name: str) -> None:
        self.runs = runs
        self.key = key
        self.feed = CallFeed()
        self.results: dict[int, AsyncResult[Any]] = {}
        self.plan = ApplyPlan(fn, name, ["call"], [], None, feed=self.feed)
        self.outstanding = 0
        self.lock = threading.Lock()

    def put(self, call: Call, result: AsyncResult[Any]) -> bool:
        """Queue one call; False if this run has ended (start a new one)."""
        with self.lock:
            try:
                index = self.feed.put(call)
            except ValueError:
                return False
            self.results[index] = result
            self.outstanding += 1
        return True

    def sink(self, start: int, values: list[Any], errors: list[int]) -> None:
        failed = set(errors)
        runs = self.runs
        with self.lock:
            results = [self.results.pop(start + i) for i in range(len(values))]
            self.outstanding -= len(values)
            if self.outstanding == 0:
                # Nothing queued or in flight: end the run (its next call starts another).
                self.feed.finish()
        for i, (result, value) in enumerate(zip(results, values, strict=True)):
            if i in failed:
                runs.notifier.post(result, None, runs.translate(value))
            else:
                runs.notifier.post(result, value, None)

    def drive(self, options: Options, executor: Executor) -> None:
        error: BaseException | None = None
        try:
            for _ in execute(self.plan, options, executor, ordered=False, sink=self.sink):
                pass
        except BaseException as exc:  # the run itself broke (terminate, a lost client)
            error = exc
        finally:
            self.runs.ended(self)
            with self.lock:
                self.feed.finish()
                left = list(self.results.values())
                self.results.clear()
            for result in left:
                self.runs.notifier.post(
                    result, None, self.runs.translate(error) if error else terminated()
                )


class ApplyRuns:
    """The pool's runs of ``apply`` calls, one per function in use.

    Args:
        executor: the pool's executor.
        notifier: the thread that delivers results and runs callbacks.
        translate: turns an error of the machinery into the one the standard library
            would raise (e.g. the pickling error itself rather than a ``SendError``).
    """

    def __init__(
        self,
        executor: Executor,
        notifier: Notifier,
        translate: Callable[[BaseException], BaseException],
    ) -> None:
        self.executor = executor
        self.notifier = notifier
        self.translate = translate
        self.lock = threading.Lock()
        self.runs: dict[Any, _Run] = {}
        self.closed = False

    def put(
        self, key: Any, fn: Callable[..., Any], name: str, call: Call, options: Options,
        result: AsyncResult[Any],
    ) -> None:
        """Run ``fn(*call[0], **call[1])`` and deliver its outcome to ``result``."""
        if self.executor.runs_inline:
            # In the caller's thread, at once, as the serial job promises.
            plan = ApplyPlan(fn, name, ["call"], [[call]], 1)
            one = _Run(self, key, fn, name)
            one.results[0], one.outstanding = result, 1
            for _ in execute(plan, options, self.executor, sink=one.sink):
                pass
            return
        while True:
            with self.lock:
                if self.closed:
                    break
                run = self.runs.get(key)
                started = run is None
                if run is None:
                    run = self.runs[key] = _Run(self, key, fn, name)
            if run.put(call, result):
                if started:
                    threading.Thread(
                        target=run.drive, args=(options, self.executor),
                        name="just_distribute-pool-apply", daemon=True,
                    ).start()
                return
            self.ended(run)  # it finished between our look-up and our put
        self.notifier.post(result, None, terminated())

    def ended(self, run: _Run) -> None:
        with self.lock:
            if self.runs.get(run.key) is run:
                del self.runs[run.key]

    def close(self) -> None:
        """Refuse new calls; fail those not yet sent (terminate, or the end)."""
        with self.lock:
            self.closed = True
            runs = list(self.runs.values())
        for run in runs:
            with run.lock:
                first, dropped = run.feed.close()
                results = [run.results.pop(first + i) for i in range(len(dropped))]
                run.outstanding -= len(results)
            for result in results:
                self.notifier.post(result, None, terminated())
