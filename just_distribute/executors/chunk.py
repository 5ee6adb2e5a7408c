"""What travels to a worker and back: a chunk of calls and its outcome.

This module is imported by worker processes, so it depends on the standard library only.
A chunk is *columnar*: one sequence per distributed argument, all of the same length, so
that ``map(fn, *columns)`` runs the calls at C speed and a chunk pickles as a few lists.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence

from just_distribute import channel as _channel
from just_distribute.channel import Channel

# Not ``typing.TYPE_CHECKING``: a worker process imports this module, and typing (with
# NamedTuple classes) would add ~3 ms to every cold start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CallError", "ChunkResult", "current_job", "run_chunk"]

#: The job whose worker is running the current call ("" outside any worker). Used to run
#: nested calls of the same job serially instead of deadlocking on a busy pool.
current_job: contextvars.ContextVar[str] = contextvars.ContextVar(
    "just_distribute_current_job", default=""
)


class CallError:
    """A call that raised: its position ``at`` in the chunk, the exception, the traceback."""

    __slots__ = ("at", "exc", "tb")

    def __init__(self, at: int, exc: BaseException, tb: str | None) -> None:
        self.at = at
        self.exc = exc
        self.tb = tb

    def __repr__(self) -> str:
        return f"CallError(at={self.at}, exc={self.exc!r})"


class ChunkResult:
    """The outcome of a chunk: one value per call run, the errors, where and when it ran."""

    __slots__ = ("ended", "errors", "started", "values", "worker")

    def __init__(
        self, values: list[Any], errors: list[CallError], worker: str, started: float,
        ended: float,
    ) -> None:
        self.values = values
        self.errors = errors
        self.worker = worker
        self.started = started
        self.ended = ended

    def __repr__(self) -> str:
        return (f"ChunkResult({len(self.values)} values, {len(self.errors)} errors, "
                f"worker={self.worker!r})")


#: With a stop check, a chunk runs in slices that grow until one takes about this long: the
#: check costs nothing per call, and a withdrawn chunk ends within a slice.
_SLICE_SECONDS = 0.005
_MAX_SLICE = 1 << 16
#: A running chunk reports its count of finished calls (for the progress display) at most
#: this often, between two slices; a chunk that ends sooner reports nothing (its outcome
#: counts its calls).
TICK_SECONDS = 0.1


def _run_rows(
    fn: Callable[..., Any],
    columns: Sequence[Sequence[Any]],
    stop: int,
    values: list[Any],
    errors: list[CallError],
    stop_on_error: bool,
    remote: bool,
) -> bool:
    """Run the rows from ``len(values)`` to ``stop``; return True if an error ends the chunk."""
    whole = len(columns[0])
    while len(values) < stop:
        done = len(values)
        try:
            if done == 0 and stop == whole:
                values.extend(map(fn, *columns))
            else:
                values.extend(map(fn, *(col[done:stop] for col in columns)))
        except Exception as exc:
            tb = _format(exc) if remote else None
            errors.append(CallError(len(values), exc, tb))
            if stop_on_error:
                return True
            values.append(exc)
    return False


def _format(exc: BaseException) -> str:
    import traceback  # on a failure only: it loads linecache, tokenize and textwrap

    return "".join(traceback.format_exception(exc))


def run_chunk(
    fn: Callable[..., Any],
    columns: Sequence[Sequence[Any]],
    stop_on_error: bool,
    worker: str,
    job: str,
    remote: bool,
    channel: Channel | None = None,
    stopped: Callable[[], bool] | None = None,
) -> ChunkResult:
    """Run ``fn`` over the rows of ``columns``.

    With ``stop_on_error`` the chunk stops at the first exception (``values`` then holds the
    results before it); otherwise the exception object takes the failed call's place and
    the chunk goes on. ``remote`` asks for the traceback as text, to cross a process line.
    ``channel`` receives the calls' :func:`~just_distribute.update` records.
    ``stopped``, when given, is asked between calls (in growing slices of calls) whether the
    run was withdrawn; if it says so the chunk ends early, with the values it has. Between
    the same slices, a channel with a ``tick`` hears how many calls are done, at most every
    :data:`TICK_SECONDS`.
    """
    token = current_job.set(job)
    started = time.time()
    values: list[Any] = []
    errors: list[CallError] = []
    # The channel reads len(values) for the running call's offset: no per-call cost.
    channel_token = _channel.install(channel, values)
    n = len(columns[0]) if columns else 0
    tick = channel.tick if channel is not None else None
    try:
        if stopped is None and tick is None:
            _run_rows(fn, columns, n, values, errors, stop_on_error, remote)
        else:
            step = 1
            ticked = time.perf_counter()
            while len(values) < n and not (stopped is not None and stopped()):
                begin = time.perf_counter()
                end = min(n, len(values) + step)
                if _run_rows(fn, columns, end, values, errors, stop_on_error, remote):
                    break
                now = time.perf_counter()
                if now - begin < _SLICE_SECONDS:
                    step = min(step * 2, _MAX_SLICE)
                if tick is not None and now - ticked >= TICK_SECONDS and len(values) < n:
                    ticked = now
                    tick(len(values))
    finally:
        _channel.uninstall(channel_token)
        current_job.reset(token)
    return ChunkResult(values, errors, worker, started, time.time())
