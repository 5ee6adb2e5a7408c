"""Updates from inside a running call, the side that publishes them: what a worker process
loads (see :mod:`just_distribute.updates` for the whole picture and the caller's side).

:func:`update` writes into the :class:`Channel` that ``run_chunk`` installed for the chunk's
calls; in a worker process the channel is an :class:`Outbox`'s, which sends batches from a
thread of its own, so that a call never waits for the caller.

Standard library only, and only its light modules (no logging, dataclasses or inspect): a
worker process imports this module before its first chunk, and each module it loads there
is paid for in every cold start.
"""

from __future__ import annotations

import contextvars
import pickle
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False  # (not typing's: a worker loads this module)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Channel", "Outbox", "update"]

#: Records a worker's buffer holds before it coalesces (the caller's holds ten times more).
CAPACITY = 1000
#: The worker side sends at most one batch per this many seconds (per chunk).
INTERVAL = 0.005

# A record as it travels: (offset of the call in its task, seq, unix time, message, values).
Raw = tuple[int, int, float, "str | None", "dict[str, Any]"]


class Channel:
    """Where :func:`update` writes, installed by ``run_chunk`` for the calls of a chunk."""

    __slots__ = ("calls", "emit", "tick")

    def __init__(
        self,
        emit: Callable[[int, str | None, dict[str, Any]], None],
        tick: Callable[[int], None] | None = None,
    ) -> None:
        self.emit = emit
        #: Where ``run_chunk`` reports how many of the chunk's calls are done (None: nobody
        #: asked: the run shows no progress).
        self.tick = tick
        self.calls: list[Any] = []  # the chunk's results so far: its length is the offset


_current: contextvars.ContextVar[Channel | None] = contextvars.ContextVar(
    "just_distribute_updates", default=None
)


def update(message: str | None = None, /, **values: Any) -> None:
    """Publish a record from inside a distributed call; outside one, do nothing.

    The caller receives it while the run goes on: ``on_update=`` gets an :class:`Update`,
    the progress bar shows the latest values, ``report.updates[index]`` lists them, and the
    ``just_distribute`` logger logs them at DEBUG. Works on every job, in ``Pool`` and
    ``compute_this`` calls. It never waits for the caller: when updates come faster than
    the caller takes them, older values of the same names are dropped (and counted in
    ``report.updates_dropped``); the latest value of each name always arrives.

    Only the thread (or asyncio task) that runs the call publishes: threads the call starts
    itself do not inherit the call's context.

    Args:
        message: a line of text (optional).
        **values: named values, e.g. ``epoch=3, loss=0.21``: small, picklable data.

    Example:
        >>> from just_distribute import update
        >>> update("outside a run: nothing happens", step=1)
    """
    channel = _current.get()
    if channel is None:
        return
    channel.emit(len(channel.calls), message, values)


def install(channel: Channel | None, calls: list[Any]) -> contextvars.Token[Any] | None:
    """Make ``channel`` the target of :func:`update` for a chunk whose results are ``calls``."""
    if channel is None:
        return None
    channel.calls = calls
    return _current.set(channel)


def uninstall(token: contextvars.Token[Any] | None) -> None:
    """Undo :func:`install`."""
    if token is not None:
        _current.reset(token)


class Buffer:
    """A bounded buffer of records that coalesces older values of the same call and names."""

    __slots__ = ("capacity", "dropped", "records")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.records: list[Any] = []
        self.dropped = 0

    def add(self, record: Any, call: int, names: tuple[Any, ...]) -> None:
        records = self.records
        if len(records) >= self.capacity:
            self._coalesce(call, names)
            records = self.records
        records.append((call, names, record))

    def _coalesce(self, call: int | None = None, names: tuple[Any, ...] = ()) -> None:
        # Keep the newest record per (call, names): the latest value of every name survives.
        seen = {(call, names)}  # the record being added (if any) replaces its older ones
        kept: list[Any] = []
        for entry in reversed(self.records):
            key = (entry[0], entry[1])
            if key in seen:
                continue
            seen.add(key)
            kept.append(entry)
        kept.reverse()
        if len(kept) > self.capacity // 2:
            # Names that differ every time cannot coalesce: drop the oldest half instead.
            kept = kept[len(kept) - self.capacity // 2 :]
        self.dropped += len(self.records) - len(kept)
        self.records = kept

    def take(self, most: int | None = None) -> tuple[list[Any], int]:
        """The oldest ``most`` records (default: all) and the count dropped so far."""
        if most is not None and len(self.records) > most:
            head, self.records = self.records[:most], self.records[most:]
        else:
            head, self.records = self.records, []
        dropped, self.dropped = self.dropped, 0
        return [e[2] for e in head], dropped


class Outbox:
    """The worker side of updates: buffers them and sends batches from a thread.

    ``send(records, dropped)`` may block (a full socket): only the sending thread waits,
    never the call. The thread starts on the first update, so chunks without updates cost
    no thread. At a chunk's end, :meth:`drain` (the outbox serves the next chunk too) or
    :meth:`close` returns what is left, for the caller to send before the chunk's outcome,
    so that the last values arrive first.
    """

    def __init__(
        self, send: Callable[[list[Raw], int, int | None], None], interval: float = INTERVAL
    ) -> None:
        self._send = send
        self._interval = interval
        self._buffer = Buffer()
        self._lock = threading.Lock()  # the buffer
        self._sending = threading.Lock()  # held while a batch is taken and sent
        self._wake = threading.Event()
        self._closed = False
        self._seq = 0
        self._done: int | None = None  # the running chunk's latest progress tick, unsent
        self._thread: threading.Thread | None = None
        #: Where a chunk's calls publish; :attr:`ticking` also takes its progress ticks.
        self.channel = Channel(self.emit)
        self.ticking = Channel(self.emit, self.tick)

    def emit(self, at: int, message: str | None, values: dict[str, Any]) -> None:
        """Buffer one record of the call at offset ``at``."""
        names = (message is not None, *values)
        with self._lock:
            self._seq += 1
            self._buffer.add((at, self._seq, time.time(), message, values), at, names)
            self._start()
        # Setting an Event costs a lock and a notify: skip it while the sender is due
        # anyway (it clears the event before it takes the buffer, so nothing is missed).
        if not self._wake.is_set():
            self._wake.set()

    def tick(self, done: int) -> None:
        """``done`` calls of the running chunk are finished: send that with the next batch."""
        with self._lock:
            self._done = done
            self._start()
        self._wake.set()

    def _start(self) -> None:
        # (under self._lock)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="just_distribute-updates", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._sending:
                with self._lock:
                    if self._closed:
                        return
                    records, dropped = self._buffer.take()
                    done, self._done = self._done, None
                if records or dropped or done is not None:
                    try:
                        self._send(records, dropped, done)
                    except Exception as exc:  # the caller is gone: the outcome fails too
                        import logging  # (only here: a worker loads no logging otherwise)

                        logging.getLogger("just_distribute").debug(
                            "updates: could not send %d records: %s", len(records), exc)
            time.sleep(self._interval)  # let the next records gather into one batch

    def drain(self) -> tuple[list[Raw], int]:
        """The records not yet sent and the count dropped, once a batch being sent is gone.

        Call it when the chunk's calls are done (nothing publishes meanwhile). A progress
        tick not yet sent is dropped: the chunk's outcome counts its calls.
        """
        with self._sending, self._lock:
            self._done = None
            return self._buffer.take()

    def close(self) -> tuple[list[Raw], int]:
        """Stop the sending thread; return the records not yet sent and the count dropped."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join()
        with self._lock:
            self._done = None
            return self._buffer.take()


#: The first byte of a frame of updates on a compute worker's socket (outcomes are pickles,
#: whose first byte is 0x80).
FRAME_TAG = b"U"


def encode(records: list[Raw], dropped: int, done: int | None = None) -> bytes:
    """A batch (and the chunk's progress tick, if any) as bytes; a value that cannot be
    pickled travels as its ``repr``."""
    try:
        return pickle.dumps((records, dropped, done), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        safe = [(at, seq, t, m, {k: _picklable(v) for k, v in vals.items()})
                for at, seq, t, m, vals in records]
        return pickle.dumps((safe, dropped, done), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes | bytearray | memoryview) -> tuple[list[Raw], int, int | None]:
    """The batch :func:`encode` wrote: records, the count dropped, the progress tick."""
    records, dropped, done = pickle.loads(data)
    return records, dropped, done


def _picklable(value: Any) -> Any:
    try:
        pickle.dumps(value)
    except Exception:
        return repr(value)
    return value
