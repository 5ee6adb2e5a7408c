"""How ``Pool.imap`` streams: a bounded hand-off between a driver thread and its reader.

The engine's run of an ``imap`` goes on in a thread of its own, so that ``next(timeout)``
can time out as in the standard library; it hands chunks of results over through a buffer
of one chunk, so that at most the engine's window plus two chunks are in flight. On the
serial job the reader's own thread runs the calls instead.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from just_distribute.pool.pool import Pool

__all__ = ["IMapIterator", "InlineStream", "Stream", "produce"]

T = TypeVar("T")


class Stream:
    """The hand-off between an ``imap`` driver thread and its consumer: a bounded buffer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.parts: collections.deque[list[Any]] = collections.deque()
        self.finished = False
        self.stopped = False
        self.unbounded = False
        self.error: BaseException | None = None

    def put(self, part: list[Any]) -> bool:
        """Hand a chunk's results over; False if the consumer has gone."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopped or self.unbounded or len(self.parts) < self.limit
            )
            if self.stopped:
                return False
            self.parts.append(part)
            self.cond.notify_all()
            return True

    def finish(self, error: BaseException | None) -> None:
        """The run has ended (the first end reported wins)."""
        with self.cond:
            if not self.finished:
                self.finished, self.error = True, error
            self.cond.notify_all()

    def abort(self, error: BaseException) -> None:
        """End the stream now: the consumer gets what is buffered, then ``error``."""
        self.set(stopped=True)
        self.finish(error)

    def get(self, timeout: float | None) -> list[Any]:
        """The next chunk's results; raises the run's error, or StopIteration at the end."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.parts or self.finished, timeout):
                raise multiprocessing.TimeoutError(
                    f"no result was ready within timeout={timeout}s"
                )
            if self.parts:
                part = self.parts.popleft()
                self.cond.notify_all()
                return part
            error, self.error = self.error, None
        if error is not None:
            raise error
        raise StopIteration

    def set(self, **flags: bool) -> None:
        with self.cond:
            for key, value in flags.items():
                setattr(self, key, value)
            self.cond.notify_all()


class InlineStream(Stream):
    """The stream of ``imap`` on the serial job: the consumer's own thread runs the calls."""

    def __init__(self, run: Iterator[list[Any]], done: Callable[[], None]) -> None:
        super().__init__(limit=0)
        self.run = run
        self.done = done

    def get(self, timeout: float | None) -> list[Any]:
        """Run the next chunk here and now (``timeout`` cannot apply: nothing runs alone)."""
        if not self.parts and not self.finished:
            try:
                self.parts.append(next(self.run))
            except BaseException as exc:
                self._end(None if isinstance(exc, StopIteration) else exc)
        return super().get(0)

    def set(self, **flags: bool) -> None:
        """``unbounded`` (join): run everything now; ``stopped``: end without running more."""
        if flags.get("unbounded"):
            while not self.finished:
                try:
                    self.parts.append(next(self.run))
                except BaseException as exc:
                    self._end(None if isinstance(exc, StopIteration) else exc)
        if flags.get("stopped"):
            self._end(None)

    def abort(self, error: BaseException) -> None:
        """End now; the consumer gets what was run, then ``error``."""
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        if self.finished:
            return
        self.finish(error)
        with contextlib.suppress(ValueError):  # running in another thread: it ends itself
            close = getattr(self.run, "close", None)
            if close is not None:
                close()
        self.done()


def produce(stream: Stream, run: Iterator[list[Any]], done: Callable[[], None]) -> None:
    """Drive one ``imap`` run in its own thread, so that ``next(timeout)`` can time out."""
    error: BaseException | None = None
    try:
        try:
            for part in run:
                if not stream.put(part):
                    break
        finally:
            close = getattr(run, "close", None)
            if close is not None:
                close()  # the engine cancels what is still queued
    except BaseException as exc:
        error = exc
    finally:
        stream.finish(error)
        done()


class IMapIterator(Iterator[T]):
    """The iterator of ``imap``/``imap_unordered``; ``next(timeout)`` as in the stdlib."""

    def __init__(self, stream: Stream, pool: Pool) -> None:
        self._stream = stream
        self._pool: Pool | None = pool
        self._values: collections.deque[Any] = collections.deque()
        # A consumer that walks away lets the driver stop instead of waiting forever.
        weakref.finalize(self, stream.set, stopped=True)

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        """The next result, waiting at most ``timeout`` seconds for it.

        Raises:
            multiprocessing.TimeoutError: none ready within ``timeout`` seconds.
            StopIteration: no more results.
        """
        while not self._values:
            try:
                self._values.extend(self._stream.get(timeout))
            except multiprocessing.TimeoutError:
                raise
            except BaseException:
                self._pool = None
                raise
        value: T = self._values.popleft()
        return value

    __next__ = next
