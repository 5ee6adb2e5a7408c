"""Runs the calls of a plan on an executor: the policy, once, for every backend.

Chunking (how many calls travel together), the bound on work in flight, input order,
errors (rebuilt with the remote traceback and a note naming the call), retries with
backoff, per-call timeouts, worker loss, progress and the run report all live here. An
executor only runs chunks.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol

from just_distribute.config import Options
from just_distribute.errors import (
    CallTimeoutError,
    ClusterUnreachableError,
    ReceiveError,
    SendError,
    WorkerLostError,
    remote_traceback,
)
from just_distribute.executors.base import ChunkFuture, Executor, Payload, RunScope, Task
from just_distribute.executors.chunk import ChunkResult
from just_distribute.planning import Plan
from just_distribute.report import RunReport
from just_distribute.updates import UpdateSink

__all__ = ["Checkpoint", "Progress", "Sink", "execute"]

log = logging.getLogger("just_distribute")

_MAX_ADAPTIVE_CHUNK = 100_000
# With a checkpoint, chunk bounds must not depend on timing (a rerun must cut the same
# chunks to find their records) and records should be small steps of the whole.
_CHECKPOINT_PARTS = 100
_CHECKPOINT_STREAM_CHUNK = 16
#: A chunk sent to another process holds about this many bytes of arguments at most: large
#: elements make small chunks (memory in flight, balance), small ones large chunks.
_CHUNK_BYTES = 8 << 20
_POLL = 0.5  # the longest single wait, so that every loop notices timeouts and signals
#: Put in the queue of finished futures to wake the loop: updates are waiting, or a feed
#: has new calls.
_WAKE: Future[Any] = Future()

#: Receives each finished chunk instead of the caller: ``sink(start, values, errors)``, where
#: ``errors`` lists the positions in ``values`` that hold an error returned in the call's
#: place (``on_error="return"``). ``Pool`` routes values to their results this way.
Sink = Callable[[int, list[Any], list[int]], None]


class Progress(Protocol):
    """What the engine needs of a progress display."""

    def update(self, n: int) -> None:
        """Count ``n`` more units (calls, or batch elements) as done."""

    def close(self) -> None:
        """The run has ended."""


class Checkpoint(Protocol):
    """Durable records of finished chunks (see ``checkpoint=``).

    Both methods get the chunk's input columns, so that a record can be keyed by the
    inputs it was computed from (and an input stream of unknown length can be recorded).
    """

    def lookup(self, start: int, columns: tuple[Any, ...]) -> tuple[list[Any], list[Any]] | None:
        """The stored results of the chunk's calls (from call ``start`` on) and their
        updates, if recorded."""

    def store(
        self, start: int, columns: tuple[Any, ...], values: list[Any], updates: list[Any]
    ) -> None:
        """Record the results of a finished chunk and its calls' updates, atomically."""


#: Seconds per call measured in earlier runs, per (job, function name): the latest few.
_history: OrderedDict[tuple[str, str], float] = OrderedDict()
_HISTORY_SIZE = 256
_history_lock = threading.Lock()


def _remember(key: tuple[str, str], per_call: float) -> None:
    with _history_lock:
        _history[key] = per_call
        _history.move_to_end(key)
        while len(_history) > _HISTORY_SIZE:
            _history.popitem(last=False)


class _Sizer:
    """Chooses chunk sizes: fixed, from the number of calls, or from measured call times."""

    def __init__(
        self,
        options: Options,
        executor: Executor,
        n: int | None,
        *,
        fixed: bool = False,
        ramp: bool = False,
        name: str = "",
        call_bytes: int | None = None,
    ) -> None:
        self.adaptive = False
        self.cap: int | None = None  # calls per chunk at most, by their bytes
        # (Not with a checkpoint: its chunk bounds must not depend on the job either.)
        if executor.remote and call_bytes and options.chunksize is None and not fixed:
            self.cap = max(1, _CHUNK_BYTES // call_bytes)
        # With a progress display the first chunks are 1, 2, 4, ... calls (up to the chosen
        # size), so the display moves as soon as the first call is back. Not without one
        # (big runs keep their few large chunks), nor when the user chose the chunk size.
        self.ramp = 1 if ramp and not fixed and options.chunksize is None else 0
        self.key = (executor.name, name)
        if options.chunksize is not None:
            self.size = options.chunksize
        elif options.timeout is not None:
            self.size = 1  # a timeout is per call: each call must be watched on its own
        elif fixed:
            # Independent of timing and (up to 25 workers x 4) of the worker count.
            parts = max(_CHECKPOINT_PARTS, executor.workers * executor.chunks_per_worker)
            self.size = max(1, math.ceil(n / parts)) if n else _CHECKPOINT_STREAM_CHUNK
        elif n is not None:
            parts = executor.workers * executor.chunks_per_worker
            per_call = _history.get(self.key)
            if per_call is not None and n * per_call < executor.target_chunk_seconds / 10:
                # Earlier runs say the whole run is worth less than a round trip or two per
                # chunk: send it as one chunk (a warm call on a few elements costs one).
                parts = 1
            self.size = max(1, math.ceil(n / parts))
        else:
            self.size, self.adaptive = 1, True
            self.ramp = 0  # adaptive sizes start at one call already
        if self.cap is not None:
            self.size = min(self.size, self.cap)
        self.target = executor.target_chunk_seconds

    def next(self) -> int:
        if 0 < self.ramp < self.size:
            size, self.ramp = self.ramp, self.ramp * 2
            return size
        return self.size

    def observe(self, calls: int, seconds: float) -> None:
        if calls == 0:
            return
        per_call = max(seconds / calls, 1e-7)
        _remember(self.key, per_call)
        if not self.adaptive:
            return
        ideal = int(self.target / per_call)
        # Grow at most 4x a step: the first measurements include warm-up.
        self.size = max(1, min(ideal, self.size * 4, self.cap or _MAX_ADAPTIVE_CHUNK))


class _Chunk:
    __slots__ = (
        "attempts", "columns", "counted", "errors", "future", "isolate", "offset", "seq",
        "start", "values",
    )

    def __init__(self, seq: int, start: int, columns: tuple[Any, ...]) -> None:
        self.seq = seq
        self.start = start
        self.columns = columns
        self.values: list[Any] = []
        self.errors: list[int] = []  # positions in values that hold a returned error
        self.offset = 0  # calls of this chunk already settled
        # Calls of this chunk the progress display has counted: settled ones, and those a
        # running task reported done (progress ticks); never more than the chunk's calls.
        self.counted = 0
        self.attempts = 0  # failed attempts of the call at ``offset``
        self.isolate = False  # after a worker died: one call at a time, to name the culprit
        self.future: ChunkFuture | None = None

    @property
    def size(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def remaining(self) -> tuple[Any, ...]:
        stop = self.offset + 1 if self.isolate else self.size
        if self.offset == 0 and stop == self.size:
            return self.columns
        return tuple(c[self.offset : stop] for c in self.columns)


def decorate_error(
    exc: BaseException, tb: str | None, index: int, fn_name: str, call: str, roles: str = ""
) -> BaseException:
    """Attach the remote traceback and a note naming the failed call (and the roles)."""
    if tb is not None and exc.__cause__ is None:
        exc.__cause__ = remote_traceback(tb)
    # One note, its second line the roles: the call's line stays the first and last note.
    note = f"just_distribute: raised by call {index}: {fn_name}({call})"
    if roles:
        note += "\n" + roles
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc


class _Run:
    """The state of one run; :meth:`chunks` is the loop."""

    def __init__(
        self,
        plan: Plan,
        options: Options,
        executor: Executor,
        *,
        ordered: bool,
        report: RunReport | None,
        progress: Progress | None,
        checkpoint: Checkpoint | None,
        sink: Sink | None = None,
    ) -> None:
        self.plan = plan
        self.sink = sink
        self.options = options
        self.executor = executor
        self.ordered = ordered
        self.report = report
        self.progress = progress
        self.checkpoint = checkpoint
        self.payload = Payload(plan.fn, plan.name)
        self.scope = RunScope()
        self.sizer = _Sizer(
            options, executor, plan.n, fixed=checkpoint is not None,
            ramp=progress is not None, name=plan.name, call_bytes=plan.call_bytes(),
        )
        self.window = options.max_in_flight or executor.workers * executor.in_flight_per_worker
        # Workers stop a chunk at its first error whenever the engine may have to act on
        # it (raise, or retry); only "return without retries" lets them run on.
        self.stop_on_error = options.on_error == "raise" or options.retries > 0
        self.pending: dict[ChunkFuture, _Chunk] = {}
        # Futures report here as they finish: one queue to wait on, where waiting on every
        # pending future (concurrent.futures.wait) costs a lock per future per wake-up.
        self.done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.delayed: list[tuple[float, int, _Chunk]] = []
        self.finished: dict[int, list[Any]] = {}
        # In order, the results before a failed call are still owed to the caller: the
        # earliest failure waits here until the output reaches it (no new chunk starts).
        self.failed: tuple[int, BaseException] | None = None
        self.updates = UpdateSink(
            plan.name, on_update=options.on_update,
            postfix=getattr(progress, "show_values", None),
            record=report.add_updates if report is not None else None,
            wake=lambda: self.done.put(_WAKE), keep=checkpoint is not None,
        )

    # -- submitting ------------------------------------------------------------------
    def submit(self, ch: _Chunk) -> None:
        while True:
            on_done = None
            if self.progress is not None:
                on_done = functools.partial(self.ticked, ch, ch.offset)
            task = Task(
                self.payload, ch.remaining(), self.stop_on_error, self.scope,
                self.updates.receiver(ch.start + ch.offset, on_done),
            )
            try:
                fut = self.executor.submit(task)
                break
            except SendError as exc:
                if exc.at is not None:
                    at = ch.offset + exc.at
                    decorate_error(
                        exc, None, ch.start + at, self.plan.name, self.describe(ch, at),
                        self.plan.roles_note,
                    )
                if self.options.on_error != "return":
                    raise
                if not ch.isolate and ch.size - ch.offset > 1:
                    ch.isolate = True  # one call at a time: only the culprit fails
                    continue
                # The call's error takes its place; the chunk goes on with the next call.
                decorate_error(
                    exc, None, ch.start + ch.offset, self.plan.name,
                    self.describe(ch, ch.offset), self.plan.roles_note,
                )
                self.returned(ch, exc)
                if ch.offset >= ch.size:
                    self.settle(ch)
                    return
        ch.future = fut
        self.pending[fut] = ch
        fut.add_done_callback(self.done.put)

    def settle(self, ch: _Chunk) -> None:
        """The chunk has all its values."""
        if self.checkpoint is not None:
            updates = self.updates.pop(ch.start, ch.start + ch.size)
            try:
                self.checkpoint.store(ch.start, ch.columns, ch.values, updates)
            except Exception as exc:  # a full disk must not cost the results themselves
                log.error("checkpoint: could not record calls from %d on: %s", ch.start, exc)
        if self.sink is not None:
            self.sink(ch.start, ch.values, ch.errors)
            return
        self.finished[ch.seq] = ch.values

    def advance(self, ch: _Chunk) -> None:
        """Resubmit what is left of a chunk, or settle it."""
        if ch.offset >= ch.size:
            self.settle(ch)
        else:
            self.submit(ch)

    # -- outcomes --------------------------------------------------------------------
    def describe(self, ch: _Chunk, offset: int) -> str:
        return self.plan.describe_call(ch.columns, offset)

    def failure(self, ch: _Chunk, exc: BaseException, tb: str | None) -> None:
        """The call at ``ch.offset`` failed: retry it, return the error, or raise it."""
        index = ch.start + ch.offset
        decorate_error(
            exc, tb, index, self.plan.name, self.describe(ch, ch.offset), self.plan.roles_note
        )
        o = self.options
        if ch.attempts < o.retries and isinstance(exc, o.retry_on):
            ch.attempts += 1
            delay = o.backoff * (2 ** (ch.attempts - 1))
            log.warning(
                "call %d of %s failed (%s: %s); retry %d of %d in %.2fs",
                index, self.plan.name, type(exc).__name__, exc, ch.attempts, o.retries, delay,
            )
            if delay > 0:
                heapq.heappush(self.delayed, (time.monotonic() + delay, ch.seq, ch))
            else:
                self.submit(ch)
            return
        if o.on_error == "return":
            self.returned(ch, exc)
            self.advance(ch)
            return
        if not self.ordered:
            raise exc
        if self.failed is None or ch.seq < self.failed[0]:
            self.failed = (ch.seq, exc)
            self.drop_after(ch.seq)
        self.finished[ch.seq] = ch.values

    def drop_after(self, seq: int) -> None:
        """The run will raise at chunk ``seq``: the chunks after it are not needed, so they
        are withdrawn now instead of running while the earlier ones finish."""
        later = [fut for fut, c in self.pending.items() if c.seq > seq]
        for fut in later:
            del self.pending[fut]
        self.executor.withdraw(later, hard=False)
        self.delayed = [d for d in self.delayed if d[2].seq <= seq]
        heapq.heapify(self.delayed)

    def outcome(self, fut: ChunkFuture) -> None:
        ch = self.pending.pop(fut)
        self.updates.dispatch()  # the chunk's updates before its results (checkpoint)
        try:
            result: ChunkResult = fut.result()
        except CancelledError:
            return
        except ClusterUnreachableError:
            raise  # the scheduler is gone, not a call: no retry, no "call N" on it
        except (WorkerLostError, ReceiveError) as exc:
            if not ch.isolate and ch.size - ch.offset > 1:
                # Which call killed the worker (or returned what cannot be rebuilt here)?
                # Run the rest one call at a time to find out (a call killed from outside
                # simply succeeds the second time).
                log.warning(
                    "%s running calls %d-%d of %s; running them one at a time",
                    "a worker died" if isinstance(exc, WorkerLostError) else "a result was lost",
                    ch.start + ch.offset, ch.start + ch.size - 1, self.plan.name,
                )
                ch.isolate = True
                self.submit(ch)
                return
            self.failure(ch, exc, None)
            return
        except Exception as exc:
            self.failure(ch, exc, None)
            return
        ran = len(result.values) + (1 if result.errors and self.stop_on_error else 0)
        if self.report is not None:
            self.report.record(result.worker, ran, result.started, result.ended)
        self.sizer.observe(ran, result.ended - result.started)
        base = ch.offset
        if not self.stop_on_error:
            for err in result.errors:
                ch.errors.append(base + err.at)
                decorate_error(
                    err.exc, err.tb, ch.start + base + err.at, self.plan.name,
                    self.describe(ch, base + err.at), self.plan.roles_note,
                )
        if ch.values:
            ch.values.extend(result.values)
        else:
            ch.values = result.values  # the usual case: no copy of a long list
        ch.offset += len(result.values)
        if ch.offset > base:
            ch.attempts = 0
        self.count(ch, ch.offset)
        if result.errors and self.stop_on_error:
            err = result.errors[0]
            self.failure(ch, err.exc, err.tb)
            return
        self.advance(ch)

    def returned(self, ch: _Chunk, exc: BaseException) -> None:
        """The call at ``ch.offset`` ends with ``exc`` as its value (``on_error="return"``)."""
        ch.errors.append(len(ch.values))
        ch.values.append(exc)
        ch.offset += 1
        ch.attempts = 0
        self.count(ch, ch.offset)

    def count(self, ch: _Chunk, upto: int) -> None:
        """Show the chunk's calls up to ``upto`` as done, those not counted yet only once.

        A task that ran calls and was then lost (its worker died, it timed out) reported
        them in ticks; they run again, and are not counted again.
        """
        if self.progress is None or upto <= ch.counted:
            return
        upto = min(upto, ch.size)
        self.progress.update(self.plan.weight(ch.columns, ch.counted, upto - ch.counted))
        ch.counted = upto

    def ticked(self, ch: _Chunk, base: int, done: int) -> None:
        """A progress tick: ``done`` calls of the task that began at offset ``base`` of
        ``ch`` are finished (called while dispatching updates, in the engine's thread)."""
        self.count(ch, base + done)

    def check_timeouts(self) -> None:
        timeout = self.options.timeout
        if timeout is None:
            return
        now = time.monotonic()
        for fut, ch in list(self.pending.items()):
            if fut not in self.pending:
                continue  # withdrawn by the failure of one that timed out before it
            if fut.started_at is None or fut.done():
                continue
            calls = 1 if ch.isolate else ch.size - ch.offset
            if now - fut.started_at <= timeout * calls:
                continue
            self.pending.pop(fut)
            self.executor.abandon(fut)
            index = ch.start + ch.offset
            what = "call" if calls == 1 else f"chunk of {calls} calls starting with call"
            exc = CallTimeoutError(
                f"{what} {index} of {self.plan.name} ran longer than timeout={timeout}s"
            )
            log.warning("%s", exc)
            ch.isolate = ch.isolate or calls > 1
            self.failure(ch, exc, None)

    def wait_time(self) -> float:
        deadline = _POLL
        now = time.monotonic()
        if self.delayed:
            deadline = min(deadline, max(0.0, self.delayed[0][0] - now))
        if self.options.timeout is not None:
            for fut in self.pending:
                if fut.started_at is not None:
                    left = fut.started_at + self.options.timeout - now
                    deadline = min(deadline, max(0.0, left) + 0.001)
        return deadline

    # -- the loop --------------------------------------------------------------------
    def chunks(self) -> Iterator[list[Any]]:
        source = self.plan.chunks(self.sizer.next)
        feed = self.plan.feed
        if feed is not None:
            feed.listen(lambda: self.done.put(_WAKE))
        exhausted = False
        source_error: BaseException | None = None
        seq = next_out = 0
        self.updates.owner = threading.get_ident()  # a serial call's updates: at once
        try:
            while True:
                while not exhausted and self.failed is None and (
                    len(self.pending) + len(self.delayed) + len(self.finished) < self.window
                ):
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except Exception as exc:
                        # The input itself raised: the results before it are still owed
                        # (in order, they come out first), then its error.
                        exhausted = True
                        if self.ordered:
                            if self.failed is None:
                                self.failed = (seq, exc)
                                self.finished[seq] = []
                        else:
                            source_error = exc
                        break
                    if item is None:  # a feed with no call waiting right now
                        break
                    start, columns = item
                    ch = _Chunk(seq, start, columns)
                    seq += 1
                    stored = (
                        self.checkpoint.lookup(start, columns)
                        if self.checkpoint is not None
                        else None
                    )
                    if stored is not None:
                        ch.values, ch.offset = stored[0], ch.size
                        self.finished[ch.seq] = ch.values
                        self.updates.replay(stored[1])
                        if self.progress is not None:
                            self.progress.update(self.plan.weight(columns))
                    else:
                        self.submit(ch)
                now = time.monotonic()
                while self.delayed and self.delayed[0][0] <= now:
                    self.submit(heapq.heappop(self.delayed)[2])
                yielded = False
                if self.ordered:
                    while next_out in self.finished:
                        part = self.finished.pop(next_out)
                        if self.failed is not None and self.failed[0] == next_out:
                            if part:
                                yield part
                            raise self.failed[1]
                        yield part
                        yielded = True
                        next_out += 1
                else:
                    for key in list(self.finished):
                        yield self.finished.pop(key)
                        yielded = True
                if not self.pending and not self.delayed and feed is None:
                    if exhausted and not self.finished:
                        self.updates.dispatch()
                        if source_error is not None:
                            raise source_error
                        return
                    continue
                if exhausted and feed is not None and not self.pending and not self.delayed:
                    self.updates.dispatch()
                    return
                if yielded and not exhausted and self.failed is None:
                    # Yielding made room in the window: fill it before waiting, or the
                    # workers idle until the next chunk comes back.
                    continue
                if self.pending or (feed is not None and not exhausted):
                    try:
                        fut = self.done.get(timeout=self.wait_time())
                    except queue.Empty:
                        pass
                    else:
                        while True:
                            if fut in self.pending:  # (not one abandoned meanwhile)
                                self.outcome(fut)
                            try:
                                fut = self.done.get_nowait()
                            except queue.Empty:
                                break
                    self.updates.dispatch()
                else:
                    time.sleep(self.wait_time())
                self.check_timeouts()
        except BaseException as exc:
            # An error, a timeout, an early break out of f.iter (GeneratorExit) or Ctrl-C:
            # no call of this run may start any more, and none may hold a worker for long.
            hard = not isinstance(exc, (Exception, GeneratorExit))
            self.scope.cancel()
            pending, self.pending = list(self.pending), {}
            self.executor.withdraw(pending, hard=hard)
            raise
        finally:
            self.scope.close()


def execute(
    plan: Plan,
    options: Options,
    executor: Executor,
    *,
    ordered: bool = True,
    report: RunReport | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
    sink: Sink | None = None,
) -> Iterator[list[Any]]:
    """Run ``plan`` on ``executor``, yielding the results chunk by chunk.

    In ``ordered`` mode the chunks come in input order, otherwise as they finish. At most
    ``options.max_in_flight`` chunks (default: a few per worker) are submitted or waiting
    to be yielded at any time, so a long input streams through in bounded memory.

    With a ``sink``, each finished chunk goes to it (with the positions of the errors
    returned as values) and nothing is yielded; the plan's ``feed``, if any, may then go
    on supplying calls while the run goes on, until it is closed.
    """
    started = time.monotonic()
    try:
        yield from _Run(
            plan, options, executor, ordered=ordered, report=report, progress=progress,
            checkpoint=checkpoint, sink=sink,
        ).chunks()
    finally:
        if report is not None:
            report.finish(time.monotonic() - started)
        if progress is not None:
            progress.close()

