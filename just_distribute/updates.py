"""Updates from inside a running call: ``just_distribute.update(epoch=3, loss=0.21)``.

A call publishes small records while it runs; the caller receives them live (``on_update=``,
the progress bar's postfix, ``report.updates``, the ``just_distribute`` logger at DEBUG).

::

    call (worker)            worker side                 caller side (engine thread)
    update(loss=.2) --> Outbox: bounded buffer  --> UpdateSink: bounded buffer --> on_update
                        (compute: "U" frames on         (wakes the engine,     progress postfix
                         the worker's socket;            which dispatches)     report.updates
                         cluster: dask events)                                 log.debug

In-process jobs (io, web, serial) skip the worker side: the call writes into the sink.

The same way carries progress *ticks* ("n calls of this chunk are done") while a chunk runs,
when the run shows progress: ``run_chunk`` reports at most every ``TICK_SECONDS`` (never for
a chunk that ends sooner), the outbox sends the latest count with its next batch, and the
sink hands it to the engine, which counts the calls not yet counted (see ``TaskUpdates``).
Both buffers are bounded: when the reader is slower than the call, older values of the same
names in the same call are *coalesced* (dropped, counted) so the newest always survive, and
``update()`` never waits for the caller.

The call's index costs nothing to find: ``run_chunk`` collects results with
``values.extend(map(fn, ...))``, and the list grows one result at a time, so while call
``i`` of a chunk runs, ``len(values) == i``.

The side that publishes (:func:`update`, :class:`Channel`, :class:`Outbox`) lives in
:mod:`just_distribute.channel`, which a worker process loads alone; this module adds the
caller's side and re-exports the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from just_distribute.channel import CAPACITY, Buffer, Channel, Outbox, Raw, update

__all__ = ["Channel", "Outbox", "TaskUpdates", "Update", "UpdateSink", "iter_values", "update"]

log = logging.getLogger("just_distribute")

#: The caller's buffer holds this many records before it coalesces.
CALLER_CAPACITY = 10 * CAPACITY
#: The caller hands out at most this many records at a time, and coalesces a backlog longer
#: than ``BACKLOG`` first (bursts shorter than that pass whole).
DISPATCH_BATCH = CAPACITY
BACKLOG = CALLER_CAPACITY // 2


@dataclasses.dataclass(slots=True)
class Update:
    """One record published by :func:`update` inside a call.

    Attributes:
        index: the call's index in the run (input order, from 0).
        worker: the name of the worker that ran the call.
        seq: increases with every update of the call (gaps: coalesced records).
        time: when it was published (``time.time()`` on the worker).
        message: the text passed, or ``None``.
        values: the named values passed.
    """

    index: int
    worker: str
    seq: int
    time: float
    message: str | None
    values: dict[str, Any]


class UpdateSink:
    """The caller side of a run's updates: buffers them and dispatches them in one thread.

    Executors deliver into a task's :meth:`receiver` from any thread; :meth:`dispatch`,
    called by the engine in the caller's thread, hands them to the callback, the progress
    display, the report and the logger, in order per call. In the thread that owns the sink
    (a serial run, where calls run inside the engine's own thread), records are dispatched
    at once; with ``owner=None`` (a single submitted call) always at once.

    Args:
        name: the function's name, for the log.
        on_update: called with each :class:`Update`.
        postfix: called with the latest value of every name (the progress bar's postfix).
        record: called with each batch of :class:`Update` records and the count dropped
            (the run report).
        wake: called when records arrive in an empty buffer (the engine then dispatches).
        keep: keep every call's updates until :meth:`pop` (for the checkpoint).
        owner: the thread ident that dispatches; ``None``: whoever delivers.
    """

    def __init__(
        self,
        name: str,
        *,
        on_update: Callable[[Update], None] | None = None,
        postfix: Callable[[dict[str, Any]], None] | None = None,
        record: Callable[[list[Update], int], None] | None = None,
        wake: Callable[[], None] | None = None,
        keep: bool = False,
        owner: int | None = None,
    ) -> None:
        self.name = name
        self.on_update = on_update
        self.postfix = postfix
        self.record = record
        self.wake = wake
        self.owner = owner
        self.kept: dict[int, list[Update]] | None = {} if keep else None
        self.dropped = 0
        self._buffer = Buffer(CALLER_CAPACITY)
        self._lock = threading.Lock()
        self._dispatch_lock = threading.Lock()
        self._latest: dict[str, Any] = {}
        self._ticks: dict[TaskUpdates, int] = {}  # the latest count per task, not yet handed

    # -- delivery (any thread) -----------------------------------------------------------
    def receiver(
        self, base: int, on_done: Callable[[int], None] | None = None
    ) -> TaskUpdates:
        """The handle of one task whose first call has index ``base`` in the run.

        Args:
            base: the index of the task's first call in the run.
            on_done: called (in the dispatching thread) with the number of the task's calls
                done, as progress ticks arrive while it runs; ``None``: no ticks wanted.
        """
        return TaskUpdates(self, base, on_done)

    def _tick(self, task: TaskUpdates, done: int) -> None:
        with self._lock:
            idle = not self._ticks and not self._buffer.records
            if done <= self._ticks.get(task, 0):
                return
            self._ticks[task] = done
        if self.owner is None or self.owner == threading.get_ident():
            self.dispatch()
        elif idle and self.wake is not None:
            self.wake()

    def _put(self, updates: list[Update], dropped: int) -> None:
        with self._lock:
            buffer = self._buffer
            empty = not buffer.records
            if len(buffer.records) + len(updates) <= buffer.capacity:
                buffer.records += [(u.index, (u.message is not None, *u.values), u)
                                   for u in updates]
            else:
                for u in updates:
                    buffer.add(u, u.index, (u.message is not None, *u.values))
            buffer.dropped += dropped
        if self.owner is None or self.owner == threading.get_ident():
            self.dispatch()
        elif empty and self.wake is not None:
            self.wake()

    # -- dispatch (the owner's thread) ---------------------------------------------------
    def dispatch(self) -> None:
        """Hand the buffered records to the callback, postfix, report and logger."""
        with self._dispatch_lock:
            while True:
                with self._lock:
                    ticks, self._ticks = self._ticks, {}
                for task, done in ticks.items():
                    if task.on_done is not None:
                        task.on_done(done)
                with self._lock:
                    buffer = self._buffer
                    if not buffer.records and not buffer.dropped:
                        return
                    if len(buffer.records) > BACKLOG:
                        # A backlog: the caller is slower than the updates. Thin it now,
                        # not record by record through a slow callback.
                        buffer._coalesce()
                    updates, dropped = buffer.take(DISPATCH_BATCH)
                self.deliver(updates, dropped)

    def deliver(self, updates: list[Update], dropped: int = 0) -> None:
        """Dispatch ``updates`` now (also used to replay those restored from a checkpoint)."""
        self.dropped += dropped
        if self.record is not None:
            self.record(updates, dropped)
        if log.isEnabledFor(logging.DEBUG):
            for u in updates:
                log.debug("update from call %d of %s on %s: %s%s", u.index, self.name,
                          u.worker, f"{u.message} " if u.message else "", u.values or "")
        if self.kept is not None:
            for u in updates:
                self.kept.setdefault(u.index, []).append(u)
        if self.postfix is not None:
            latest = self._latest
            for u in updates:
                latest.update(u.values)
            if latest:
                self.postfix(dict(latest))
        if self.on_update is not None:
            for u in updates:
                self.on_update(u)

    def pop(self, start: int, stop: int) -> list[Update]:
        """The kept updates of calls ``start`` to ``stop - 1``, forgotten here."""
        if self.kept is None or not self.kept:
            return []
        out: list[Update] = []
        for i in range(start, stop):
            out += self.kept.pop(i, ())
        return out

    def replay(self, stored: list[Update]) -> None:
        """Dispatch updates restored from a checkpoint (not kept again)."""
        kept, self.kept = self.kept, None
        try:
            self.deliver(list(stored))
        finally:
            self.kept = kept


class TaskUpdates:
    """One task's way into an :class:`UpdateSink`: local records, or batches from a worker.

    Progress ticks (how many of the task's calls are done) reach ``on_done`` through the
    sink, in the dispatching thread; only a count higher than the last one is handed on, so
    a tick that arrives late (after a higher one, or after the outcome) changes nothing.
    """

    __slots__ = ("base", "last", "on_done", "sink")

    def __init__(
        self, sink: UpdateSink, base: int, on_done: Callable[[int], None] | None = None
    ) -> None:
        self.sink = sink
        self.base = base
        self.on_done = on_done
        self.last = 0  # the highest seq received from the worker

    @property
    def wants_ticks(self) -> bool:
        """Whether the run counts calls while the task runs (it shows progress)."""
        return self.on_done is not None

    def channel(self, worker: str) -> Channel:
        """A channel for calls running in this process (threads, event loops, serial)."""
        seq = iter(range(1, 1 << 62))
        base, put = self.base, self.sink._put

        def emit(at: int, message: str | None, values: dict[str, Any]) -> None:
            put([Update(base + at, worker, next(seq), time.time(), message, values)], 0)

        return Channel(emit, self.tick if self.on_done is not None else None)

    def tick(self, done: int) -> None:
        """``done`` of the task's calls are finished (a progress tick)."""
        self.sink._tick(self, done)

    def receive(
        self, worker: str, records: list[Raw], dropped: int, done: int | None = None
    ) -> None:
        """A batch sent by a worker's :class:`Outbox`, with its progress tick, if any.

        Batches can arrive out of order on the cluster (live ones as dask events, the last
        one with the outcome): records older than one already received are superseded, and
        count as dropped.
        """
        if done is not None:
            self.sink._tick(self, done)
            if not records and not dropped:
                return
        base = self.base
        with self.sink._lock:
            fresh = [r for r in records if r[1] > self.last]
            dropped += len(records) - len(fresh)
            if fresh:
                self.last = max(self.last, fresh[-1][1])
        self.sink._put(
            [Update(base + at, worker, seq, t, m, v) for at, seq, t, m, v in fresh], dropped
        )


def iter_values(updates: list[Update], name: str) -> Iterator[Any]:
    """The values of ``name`` in ``updates``, in order (a training curve, say)."""
    for u in updates:
        if name in u.values:
            yield u.values[name]
