"""What travels to a worker and back: a chunk of calls and its outcome.

This module is imported by worker processes, so it depends on the standard library only.
A chunk is *columnar*: one sequence per distributed argument, all of the same length, so
that ``map(fn, *columns)`` runs the calls at C speed and a chunk pickles as a few lists.
"""

from __future__ import annotations

import contextvars
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from just_distribute import updates as _updates
from just_distribute.updates import Channel

__all__ = ["CallError", "ChunkResult", "current_job", "run_chunk"]

#: The job whose worker is running the current call ("" outside any worker). Used to run
#: nested calls of the same job serially instead of deadlocking on a busy pool.
current_job: contextvars.ContextVar[str] = contextvars.ContextVar(
    "just_distribute_current_job", default=""
)


class CallError(NamedTuple):
    """A call that raised: its position ``at`` in the chunk, the exception, the traceback."""

    at: int
    exc: BaseException
    tb: str | None


class ChunkResult(NamedTuple):
    """The outcome of a chunk: one value per call run, the errors, where and when it ran."""

    values: list[Any]
    errors: list[CallError]
    worker: str
    started: float
    ended: float


def run_chunk(
    fn: Callable[..., Any],
    columns: Sequence[Sequence[Any]],
    stop_on_error: bool,
    worker: str,
    job: str,
    remote: bool,
    channel: Channel | None = None,
) -> ChunkResult:
    """Run ``fn`` over the rows of ``columns``.

    With ``stop_on_error`` the chunk stops at the first exception (``values`` then holds the
    results before it); otherwise the exception object takes the failed call's place and
    the chunk goes on. ``remote`` asks for the traceback as text, to cross a process line.
    ``channel`` receives the calls' :func:`~just_distribute.update` records.
    """
    token = current_job.set(job)
    started = time.time()
    values: list[Any] = []
    errors: list[CallError] = []
    # The channel reads len(values) for the running call's offset: no per-call cost.
    channel_token = _updates.install(channel, values)
    n = len(columns[0]) if columns else 0
    try:
        while len(values) < n:
            done = len(values)
            try:
                if done == 0:
                    values.extend(map(fn, *columns))
                else:
                    values.extend(map(fn, *(col[done:] for col in columns)))
            except Exception as exc:
                tb = "".join(traceback.format_exception(exc)) if remote else None
                errors.append(CallError(len(values), exc, tb))
                if stop_on_error:
                    break
                values.append(exc)
    finally:
        _updates.uninstall(channel_token)
        current_job.reset(token)
    return ChunkResult(values, errors, worker, started, time.time())
