"""The engine's policy, driven by a scripted executor: no processes, milliseconds each.

The fake executor runs each chunk's calls in the test's own process (``Task.run_here``)
and then does what its script says: finish chunks out of order, lose a worker on a given
input, never answer, count how many chunks are out at once. What is checked is the
engine's part only: order around a failure, retries and backoff, isolating the call that
killed a worker, the in-flight window, timeouts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from just_distribute import CallTimeoutError, ChunkFuture, Executor, Task, WorkerLostError
from just_distribute.config import Options
from just_distribute.engine import execute
from just_distribute.planning import Plan


class Scripted(Executor):
    """Runs chunks in place, then settles their futures as the script says.

    Args:
        lose_on: inputs whose chunk "kills its worker" (WorkerLostError for the chunk).
        hang_on: inputs whose chunk never settles (until abandoned).
        reverse: settle the chunks handed over so far last-first.
        batch: settle once this many chunks are waiting (or, with ``linger``, after a pause).
        linger: seconds after which fewer than ``batch`` waiting chunks settle anyway.
    """

    name = "scripted"

    def __init__(
        self, workers: int = 2, *, lose_on: Iterable[Any] = (), hang_on: Iterable[Any] = (),
        reverse: bool = False, batch: int = 1, linger: float | None = 0.01,
    ) -> None:
        super().__init__(workers)
        self.lose_on = set(lose_on)
        self.hang_on = set(hang_on)
        self.reverse = reverse
        self.batch = batch
        self.linger = linger
        self.waiting: list[tuple[ChunkFuture, Task]] = []
        self.submitted: list[list[Any]] = []
        self.out = 0
        self.most_out = 0
        self.abandoned: list[ChunkFuture] = []
        self.lock = threading.Lock()

    def submit(self, task: Task) -> ChunkFuture:
        fut = ChunkFuture()
        fut.mark_started()
        rows = list(task.columns[0])
        with self.lock:
            self.submitted.append(rows)
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        if self.hang_on & set(rows):
            return fut
        with self.lock:
            self.waiting.append((fut, task))
            full = len(self.waiting) >= self.batch
        if full:
            self.flush()
        elif self.linger is not None:
            threading.Timer(self.linger, self.flush).start()
        return fut

    def flush(self) -> None:
        with self.lock:
            todo, self.waiting = self.waiting, []
        for fut, task in reversed(todo) if self.reverse else todo:
            self._settle(fut, task)

    def _settle(self, fut: ChunkFuture, task: Task) -> None:
        with self.lock:
            self.out -= 1
        if self.lose_on & set(task.columns[0]):
            fut.set_exception(WorkerLostError("scripted worker loss", exitcode=-9))
        else:
            fut.set_result(task.run_here("fake"))

    def abandon(self, future: ChunkFuture) -> None:
        self.abandoned.append(future)
        with self.lock:
            self.out -= 1
        future.cancel()


def plan_of(fn: Callable[[Any], Any], items: list[Any]) -> Plan:
    name = getattr(fn, "__name__", "fn")
    return Plan(fn, name, ["x"], [items], len(items), total_units=len(items))


def run(ex: Executor, fn: Callable[[Any], Any], items: list[Any], **options: Any) -> list[Any]:
    out: list[Any] = []
    for part in execute(plan_of(fn, items), Options(job=ex, **options), ex):
        out.extend(part)
    return out


def fail_on_5(x: int) -> int:
    if x == 5:
        raise KeyError(x)
    return x * 10


def test_results_come_in_input_order_when_chunks_finish_last_first() -> None:
    ex = Scripted(reverse=True, batch=3)
    assert run(ex, lambda x: x + 1, list(range(40)), chunksize=4, max_in_flight=3) == list(
        range(1, 41)
    )


def test_the_results_before_a_failure_come_first_then_its_error_naming_the_call() -> None:
    ex = Scripted(reverse=True, batch=2)
    got: list[int] = []
    with pytest.raises(KeyError) as info:
        for part in execute(plan_of(fail_on_5, list(range(20))), Options(job=ex, chunksize=2), ex):
            got.extend(part)
    assert got == [0, 10, 20, 30, 40]  # everything before call 5, in order, nothing after
    assert "raised by call 5: fail_on_5(x=5)" in info.value.__notes__[-1]


def test_on_error_return_puts_the_exception_in_place_and_runs_the_rest() -> None:
    out = run(Scripted(), fail_on_5, list(range(8)), on_error="return", chunksize=3)
    assert isinstance(out[5], KeyError) and out[:5] == [0, 10, 20, 30, 40] and out[6:] == [60, 70]


def test_retries_rerun_only_the_failed_call_with_growing_backoff() -> None:
    attempts: dict[int, list[float]] = {}

    def flaky(x: int) -> int:
        attempts.setdefault(x, []).append(time.monotonic())
        if x == 3 and len(attempts[x]) < 3:
            raise ConnectionError("try again")
        return x

    out = run(Scripted(), flaky, list(range(6)), retries=2, backoff=0.02, chunksize=6)
    assert out == list(range(6))
    assert len(attempts[3]) == 3 and all(len(attempts[x]) == 1 for x in (0, 1, 2, 4, 5))
    first, second, third = attempts[3]
    assert second - first >= 0.02 and third - second >= 0.04  # backoff * 2**(attempt-1)


def test_retries_stop_after_the_budget_and_raise_the_last_error() -> None:
    calls: list[int] = []

    def always(x: int) -> int:
        calls.append(x)
        raise ConnectionError(f"down {x}")

    with pytest.raises(ConnectionError, match="down 0"):
        run(Scripted(), always, [0], retries=2)
    assert calls == [0, 0, 0]


def test_retry_on_limits_what_is_retried() -> None:
    calls: list[int] = []

    def bad(x: int) -> int:
        calls.append(x)
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        run(Scripted(), bad, [1], retries=3, retry_on=(ConnectionError,))
    assert calls == [1]


def test_a_lost_worker_is_isolated_to_the_call_that_killed_it() -> None:
    ex = Scripted(lose_on={7})
    out = run(ex, lambda x: x, list(range(12)), chunksize=6, on_error="return")
    assert isinstance(out[7], WorkerLostError)
    assert [v for i, v in enumerate(out) if i != 7] == [i for i in range(12) if i != 7]
    # The chunk 6..11 failed whole, then ran one call at a time: 6, 7 (lost again), 8, ...
    assert [6, 7, 8, 9, 10, 11] in ex.submitted and [7] in ex.submitted and [8] in ex.submitted
    assert "raised by call 7" in out[7].__notes__[-1]


def test_the_window_bounds_chunks_out_at_once() -> None:
    ex = Scripted(batch=10**6, linger=None)  # settle only when asked: the engine stops at 3

    def drive() -> list[Any]:
        return run(ex, lambda x: x, list(range(100)), chunksize=1, max_in_flight=3)

    result: list[Any] = []
    t = threading.Thread(target=lambda: result.extend(drive()))
    t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and t.is_alive():
        time.sleep(0.005)
        ex.flush()
    t.join(5)
    assert result == list(range(100))
    assert ex.most_out == 3


def test_a_call_past_its_timeout_raises_and_its_chunk_is_abandoned() -> None:
    ex = Scripted(hang_on={2})
    started = time.monotonic()
    with pytest.raises(CallTimeoutError, match=r"call 2 of <lambda> ran longer than timeout=0.05s"):
        run(ex, lambda x: x, list(range(4)), timeout=0.05)
    assert time.monotonic() - started < 5  # bounded: it does not wait for the hung call
    assert len(ex.abandoned) == 1


def test_a_timeout_with_return_keeps_going() -> None:
    ex = Scripted(hang_on={1})
    out = run(ex, lambda x: x, [0, 1, 2], timeout=0.05, on_error="return")
    assert out[0] == 0 and isinstance(out[1], CallTimeoutError) and out[2] == 2
