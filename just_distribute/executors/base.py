"""The small interface every backend implements.

An executor knows how to run a chunk of calls somewhere and hand back a future of its
:class:`~just_distribute.executors.chunk.ChunkResult`. It knows nothing of argument roles,
ordering, progress, retries or timeouts: that policy lives once, in the engine.

A backend of one's own needs only the public names (``just_distribute.Executor``,
``Task``, ``ChunkFuture``, ``ChunkResult``): a :class:`Task` runs itself, here
(:meth:`Task.run_here`) or, pickled, in another process (:meth:`Task.portable`), and
:meth:`ChunkFuture.track` mirrors the future of the pool that ran it. See the docs page
"Writing an executor".
"""

from __future__ import annotations

import abc
import contextvars
import hashlib
import inspect
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any, ClassVar

from just_distribute.channel import Channel
from just_distribute.errors import SendError
from just_distribute.executors.chunk import ChunkResult, run_chunk
from just_distribute.updates import TaskUpdates

__all__ = [
    "ChunkFuture", "Executor", "Payload", "PortableTask", "RunScope", "Task", "current_run",
    "is_async",
]

#: Seconds a withdrawn chunk may run on before its worker is given up for a fresh one.
WITHDRAW_GRACE = 1.0


def is_async(fn: Any) -> bool:
    """True if calling ``fn`` returns an awaitable (``async def``, also behind partial)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class ChunkFuture(Future[ChunkResult]):
    """A future of one chunk's outcome, which also knows when the chunk started running."""

    def __init__(self) -> None:
        super().__init__()
        self.started_at: float | None = None
        #: Where the chunk's :func:`~just_distribute.update` records go (set by executors
        #: that receive them apart from the outcome).
        self.updates: TaskUpdates | None = None

    def track(self, other: Future[ChunkResult]) -> None:
        """Take the outcome of ``other`` (a ``concurrent.futures`` future) when it is done.

        Marks this future as started now; a cancelled ``other`` ends it with
        ``CancelledError``.
        """
        self.mark_started()

        def copy(done: Future[ChunkResult]) -> None:
            if self.done():
                return
            if done.cancelled():
                # (this one counts as running and cannot be cancelled: it ends as one)
                self.set_exception(CancelledError())
            elif (exc := done.exception()) is not None:
                self.set_exception(exc)
            else:
                self.set_result(done.result())

        other.add_done_callback(copy)

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
                from just_distribute.executors.wire import dumps_function

                try:
                    self._bytes = dumps_function(self.fn)
                except Exception as exc:
                    from just_distribute.executors.sendable import explain_function

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
        #: Set when the run ended early: chunks still running stop at their next call.
        self.cancelled = False
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """The run ended early: its chunks that are still running should stop."""
        self.cancelled = True

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


#: The run whose call is executing in this context (the web job sets it for each call), so
#: that :func:`just_distribute.web.session` can share one HTTP session per run.
current_run: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "just_distribute_web_run", default=None
)


class Task:
    """One chunk of calls to run: the function, the columns, what to do on an error.

    ``updates``, if set, receives the :func:`~just_distribute.update` records of the calls:
    an executor running calls in this process passes :meth:`channel` to ``run_chunk``; one
    running them elsewhere hands the batches its workers send to ``updates.receive``.
    """

    __slots__ = ("columns", "payload", "run", "stop_on_error", "updates")

    def __init__(
        self,
        payload: Payload,
        columns: Sequence[Sequence[Any]],
        stop_on_error: bool,
        run: RunScope,
        updates: TaskUpdates | None = None,
    ) -> None:
        self.payload = payload
        self.columns = columns
        self.stop_on_error = stop_on_error
        self.run = run
        self.updates = updates

    def channel(self, worker: str) -> Channel | None:
        """Where calls running in this process publish their updates (None: nowhere)."""
        return None if self.updates is None else self.updates.channel(worker)

    def run_here(self, worker: str = "", job: str = "") -> ChunkResult:
        """Run the chunk in this thread and return its outcome (errors as values).

        Args:
            worker: the name the run report shows for where it ran.
            job: the job whose worker this is: a distributed call made inside one of the
                calls of the same job then runs serially instead of waiting on the pool.
        """
        name = worker or threading.current_thread().name
        scope = self.run
        return run_chunk(
            self.payload.fn, self.columns, self.stop_on_error, name, job, False,
            self.channel(name), stopped=lambda: scope.cancelled,
        )

    def portable(self) -> PortableTask:
        """The chunk as a picklable callable, to run in another process (``pool.submit``).

        The function travels serialised (by value where it cannot be imported there);
        calling the result returns the :class:`ChunkResult`, tracebacks as text.

        Raises:
            SendError: the function or its constants cannot be serialised.
        """
        return PortableTask(self.payload.serialized(), self.columns, self.stop_on_error)


class PortableTask:
    """A :class:`Task` that can be pickled: ``result = portable()`` runs it where it lands."""

    __slots__ = ("columns", "function", "stop_on_error")

    def __init__(
        self, function: bytes, columns: Sequence[Sequence[Any]], stop_on_error: bool
    ) -> None:
        self.function = function
        self.columns = columns
        self.stop_on_error = stop_on_error

    def __getstate__(self) -> tuple[bytes, Sequence[Sequence[Any]], bool]:
        return self.function, self.columns, self.stop_on_error

    def __setstate__(self, state: tuple[bytes, Sequence[Sequence[Any]], bool]) -> None:
        self.function, self.columns, self.stop_on_error = state

    def __call__(self) -> ChunkResult:
        from just_distribute.executors import wire

        fn = wire.loads(self.function)
        worker = f"{os.getpid()}:{threading.current_thread().name}"
        return run_chunk(fn, self.columns, self.stop_on_error, worker, "", True)


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

    Capabilities (what the front-ends ask instead of testing a job's name):

    Attributes:
        awaits_coroutines: runs ``async def`` functions natively (awaits them on its own
            loop); elsewhere they are wrapped to run on an event loop of their own per call.
        native_initializer: runs ``initializer=`` itself, once per worker, when its factory
            is given one; elsewhere each call is wrapped to run it once per process.
        recycles_workers: honours :attr:`max_tasks` (``Pool(maxtasksperchild=N)``).
        runs_inline: runs every call in the caller's own thread (no helper threads).
        workers: how many calls it runs at once: a plain number; :meth:`refresh` updates
            it where the backend can change size (a cluster).
        max_tasks: with ``recycles_workers``, chunks a worker runs before it is replaced.
    """

    name: ClassVar[str] = "?"
    remote: ClassVar[bool] = False
    chunks_per_worker: ClassVar[int] = 4
    in_flight_per_worker: ClassVar[int] = 2
    target_chunk_seconds: ClassVar[float] = 0.02
    awaits_coroutines: ClassVar[bool] = False
    native_initializer: ClassVar[bool] = False
    recycles_workers: ClassVar[bool] = False
    runs_inline: ClassVar[bool] = False

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.max_tasks: int | None = None

    @property
    def closed(self) -> bool:
        """Whether it was shut down (the registry then makes a new one)."""
        return False

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Bring :attr:`workers` up to date (a cluster counts its threads); cheap if fresh."""

    @abc.abstractmethod
    def submit(self, task: Task) -> ChunkFuture:
        """Start running ``task`` and return the future of its outcome.

        Raises:
            SendError: the chunk cannot be serialised (raised in the caller, at once).
        """

    def abandon(self, future: ChunkFuture) -> None:
        """Stop caring about ``future``: cancel it if queued, stop it if the backend can."""
        future.cancel()

    def stop(self, futures: Sequence[ChunkFuture]) -> None:
        """Stop these chunks for good (``Pool.terminate``): drop the queued ones, stop the
        running ones where the backend can. The default abandons each."""
        for future in futures:
            self.abandon(future)

    def stop_after_call(self, future: ChunkFuture) -> None:  # noqa: B027 - optional hook
        """Ask the running chunk of ``future`` to end after its current call.

        Executors that run chunks in this process need nothing here: their chunks watch
        :attr:`RunScope.cancelled` of their task.
        """

    def withdraw(self, futures: Sequence[ChunkFuture], hard: bool) -> None:
        """A run ended early: its queued chunks must not start, its running ones must end.

        Queued chunks are cancelled. With ``hard`` (Ctrl-C) running ones are abandoned at
        once; otherwise each is asked to :meth:`stop_after_call`, and one still
        running after :data:`WITHDRAW_GRACE` seconds (a stuck call) is abandoned then, so
        that the next run gets a fresh worker instead of waiting behind it.
        """
        running = [f for f in futures if not f.cancel() and not f.done()]
        if not running:
            return
        if hard:
            for f in running:
                self.abandon(f)
            return
        for f in running:
            self.stop_after_call(f)

        def reap() -> None:
            for f in running:
                if not f.done():
                    self.abandon(f)

        timer = threading.Timer(WITHDRAW_GRACE, reap)
        timer.daemon = True
        timer.start()

    def shutdown(self, wait: bool = True) -> None:  # noqa: B027 - optional hook
        """Release the workers. The registry calls this at interpreter exit."""

    def check_nesting(self) -> bool:
        """Return True if a call from the current context must run serially instead.

        The default: a call made from inside one of this job's own workers runs serially
        in that worker, because the pool is busy with the outer call.
        """
        from just_distribute.executors.chunk import current_job

        return current_job.get() == self.name
