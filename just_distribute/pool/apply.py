"""``apply_async`` in bulk: calls queued while the workers are busy travel together.

A loop of ``pool.apply_async(f, (x,))`` is the most common ``multiprocessing.Pool`` idiom
after ``map``. Sent one by one, each call would cost a round trip to a worker (and, on the
cluster, a scheduler task). Here one thread hands the calls over: while fewer chunks than
the executor's window are out, a call goes at once, alone (no added latency); calls that
arrive while the window is full wait and then travel together in one chunk, each with its
own result and its own error.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from just_distribute.errors import WorkerLostError
from just_distribute.executors import Payload, RunScope, Task
from just_distribute.executors.chunk import ChunkResult
from just_distribute.planning import short_repr
from just_distribute.pool.support import AsyncResult, Notifier, OwnedExecutor, terminated
from just_distribute.updates import UpdateSink

__all__ = ["ApplyQueue"]

_MAX_BATCH = 10_000

#: One queued call: the function's payload, its arguments, its result and how to fail it.
_Call = tuple[Payload, tuple[tuple[Any, ...], dict[str, Any]], AsyncResult[Any]]


def _describe(call: tuple[tuple[Any, ...], dict[str, Any]]) -> str:
    args, kwargs = call
    return ", ".join(
        [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()]
    )


class ApplyQueue:
    """The calls of ``apply_async`` on their way to the executor (see the module doc)."""

    def __init__(
        self,
        executor: OwnedExecutor,
        notifier: Notifier,
        fail: Callable[[BaseException, str | None, str, str], BaseException],
        updates: UpdateSink | None = None,
    ) -> None:
        self.executor = executor
        # The calls' update() records; a call's index is its number in the order sent.
        self.updates = updates
        self.sent = 0
        self.notifier = notifier
        self.fail = fail  # decorates an error with the failed call
        self.cond = threading.Condition()
        self.calls: collections.deque[_Call] = collections.deque()
        self.out = 0
        self.closed = False
        self.thread: threading.Thread | None = None

    def put(
        self, payload: Payload, call: tuple[tuple[Any, ...], dict[str, Any]],
        result: AsyncResult[Any],
    ) -> None:
        """Queue one call; it is sent at once if the window has room."""
        if self.executor.runs_inline:  # in the caller's thread, as serial promises
            with self.cond:
                self.out += 1
            self._send([(payload, call, result)])
            return
        with self.cond:
            if self.closed:
                self.notifier.post(result, None, terminated())
                return
            self.calls.append((payload, call, result))
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._loop, name="just_distribute-pool-apply", daemon=True
                )
                self.thread.start()
            self.cond.notify_all()

    def close(self) -> None:
        """Fail the calls not yet sent and stop the thread (terminate, or the end)."""
        with self.cond:
            self.closed = True
            dropped, self.calls = list(self.calls), collections.deque()
            self.cond.notify_all()
        for _, _, result in dropped:
            self.notifier.post(result, None, terminated())

    def _window(self) -> int:
        ex = self.executor
        return max(1, ex.workers * ex.in_flight_per_worker)

    def _take(self, window: int) -> list[_Call]:
        """The next batch: calls of one function, in order, a fair share of the queue."""
        share = min(_MAX_BATCH, max(1, math.ceil(len(self.calls) / window)))
        payload = self.calls[0][0]
        batch: list[_Call] = []
        while self.calls and len(batch) < share and self.calls[0][0] is payload:
            batch.append(self.calls.popleft())
        return batch

    def _loop(self) -> None:
        window = self._window()
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.closed or (self.calls and self.out < window))
                if self.closed:
                    return
                batch = self._take(window)
                self.out += 1
            self._send(batch)

    def _send(self, batch: list[_Call]) -> None:
        payload = batch[0][0]
        scope = RunScope()
        receiver = None
        if self.updates is not None:
            with self.cond:
                receiver = self.updates.receiver(self.sent)
                self.sent += len(batch)
        task = Task(payload, ([call for _, call, _ in batch],), False, scope, receiver)
        try:
            fut = self.executor.submit(task)
        except Exception as exc:
            self._returned()
            if len(batch) > 1:  # one bad argument must not fail its neighbours
                self._one_by_one(batch)
                return
            self._settle(batch, None, exc)
            return

        def done(f: Future[ChunkResult]) -> None:
            scope.close()
            self._returned()
            if f.cancelled():
                self._settle(batch, None, terminated())
            elif isinstance(exc := f.exception(), WorkerLostError) and len(batch) > 1:
                # Which call killed the worker? Alone, only the culprit fails (a worker
                # killed from outside costs nothing but the rerun).
                self._one_by_one(batch)
            elif exc is not None:
                self._settle(batch, None, exc)
            else:
                self._settle(batch, f.result(), None)

        fut.add_done_callback(done)

    def _one_by_one(self, batch: list[_Call]) -> None:
        for one in batch:
            with self.cond:
                self.out += 1
            self._send([one])

    def _returned(self) -> None:
        with self.cond:
            self.out -= 1
            self.cond.notify_all()

    def _settle(
        self, batch: list[_Call], outcome: ChunkResult | None, error: BaseException | None
    ) -> None:
        failed = {} if outcome is None else {e.at: e for e in outcome.errors}
        for i, (payload, call, result) in enumerate(batch):
            if outcome is None:
                assert error is not None
                exc = error if len(batch) == 1 else _copy_error(error)
                self.notifier.post(
                    result, None, self.fail(exc, None, payload.name, _describe(call))
                )
            elif i in failed:
                err = failed[i]
                self.notifier.post(
                    result, None, self.fail(err.exc, err.tb, payload.name, _describe(call))
                )
            else:
                self.notifier.post(result, outcome.values[i], None)


def _copy_error(error: BaseException) -> BaseException:
    """A copy of a chunk-wide error for one call of it, so that each gets its own note."""
    try:
        copy = type(error).__new__(type(error))
        copy.__dict__.update(getattr(error, "__dict__", {}))
        if "__notes__" in copy.__dict__:
            copy.__notes__ = list(copy.__notes__)
        copy.args = error.args
        copy.__cause__ = error.__cause__
        return copy
    except Exception:
        return error
