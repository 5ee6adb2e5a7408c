"""The small interface every backend implements.

An executor knows how to run a chunk of calls somewhere and hand back a future of its
:class:`~just_distribute._chunk.ChunkResult`. It knows nothing of argument roles, ordering,
progress, retries or timeouts: that policy lives once, in the engine.
"""

from __future__ import annotations

import abc
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

from .._chunk import ChunkResult
from ..errors import SendError

__all__ = ["ChunkFuture", "Executor", "Payload", "RunScope", "Task"]


class ChunkFuture(Future[ChunkResult]):
    """A future of one chunk's outcome, which also knows when the chunk started running."""

    def __init__(self) -> None:
        super().__init__()
        self.started_at: float | None = None

    def mark_started(self) -> bool:
        """Record the start time; return False if the future was cancelled meanwhile."""
        if not self.set_running_or_notify_cancel():
            return False
        self.started_at = time.monotonic()
        return True


class Payload:
    """The function of a run, its constants bound, with a key and a cached serialisation."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self._key: str | None = None
        self._bytes: bytes | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """A digest of :meth:`serialized`: the same function with the same constants has the
        same key in every run, so a worker that already holds it is not sent it again."""
        if self._key is None:
            self._key = hashlib.blake2b(self.serialized(), digest_size=16).hexdigest()
        return self._key

    def serialized(self) -> bytes:
        """The function and its constants as bytes, made once.

        Raises:
            SendError: they cannot be serialised, with the reason.
        """
        with self._lock:
            if self._bytes is None:
                from .._wire import dumps_function

                try:
                    self._bytes = dumps_function(self.fn)
                except Exception as exc:
                    from .._sendable import explain_function

                    why = explain_function(self.fn) or f"{type(exc).__name__}: {exc}"
                    raise SendError(
                        f"cannot send {self.name}() or its keyword constants to a worker "
                        f"process: {why}. Functions, lambdas and "
                        f"closures are sent by value, but what they capture (open files, "
                        f"locks, sockets, database connections) cannot cross a process "
                        f"boundary: create such objects inside the function, or use "
                        f'job="io" (threads), which sends nothing.'
                    ) from exc
            return self._bytes


class RunScope:
    """Resources that live for one run of a decorated function (e.g. an HTTP session)."""

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` when the run ends."""
        with self._lock:
            self._closers.append(closer)

    def close(self) -> None:
        """Release the run's resources, last opened first."""
        with self._lock:
            closers, self._closers = self._closers[::-1], []
        for closer in closers:
            closer()


class Task:
    """One chunk of calls to run: the function, the columns, what to do on an error."""

    __slots__ = ("columns", "payload", "run", "stop_on_error")

    def __init__(
        self,
        payload: Payload,
        columns: Sequence[Sequence[Any]],
        stop_on_error: bool,
        run: RunScope,
    ) -> None:
        self.payload = payload
        self.columns = columns
        self.stop_on_error = stop_on_error
        self.run = run


class Executor(abc.ABC):
    """Runs chunks of calls. Subclasses set the class attributes to describe themselves.

    Attributes:
        name: the job name it serves.
        remote: results cross a process boundary (tracebacks travel as text).
        chunks_per_worker: how many chunks per worker the engine aims for when the number of
            calls is known: few for processes (each chunk costs a round trip), more for
            threads and coroutines (chunks are free, balance matters).
        in_flight_per_worker: chunks handed over per worker before the engine waits.
        target_chunk_seconds: the chunk duration adaptive chunking aims for.
    """

    name: ClassVar[str] = "?"
    remote: ClassVar[bool] = False
    chunks_per_worker: ClassVar[int] = 4
    in_flight_per_worker: ClassVar[int] = 2
    target_chunk_seconds: ClassVar[float] = 0.02

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @abc.abstractmethod
    def submit(self, task: Task) -> ChunkFuture:
        """Start running ``task`` and return the future of its outcome.

        Raises:
            SendError: the chunk cannot be serialised (raised in the caller, at once).
        """

    def abandon(self, future: ChunkFuture) -> None:
        """Stop caring about ``future``: cancel it if queued, stop it if the backend can."""
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:  # noqa: B027 - optional hook
        """Release the workers. The registry calls this at interpreter exit."""

    def check_nesting(self) -> bool:
        """Return True if a call from the current context must run serially instead.

        The default: a call made from inside one of this job's own workers runs serially
        in that worker, because the pool is busy with the outer call.
        """
        from .._chunk import current_job

        return current_job.get() == self.name
