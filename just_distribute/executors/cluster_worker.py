"""The dask task of ``job="cluster"``: what runs on a worker (see :mod:`.cluster`).

Kept apart from the caller's side so that a worker imports only what it runs.

Stopping a withdrawn chunk, in three steps, each only if the one before did not free the
thread (the caller drives them, see ``ClusterExecutor.withdraw``):

1. between two calls the chunk reads its task's "cancelled" mark and ends
   (:func:`cancelled_check`);
2. a call still running is interrupted: ``KeyboardInterrupt`` is raised in the thread that
   runs it (:func:`interrupt_calls`), as Ctrl-C would in a script. That ends Python code
   at its next bytecode, not a call blocked in C (``time.sleep``, a socket wait, a long
   numpy operation), which sees it when it returns;
3. a one-thread worker whose call survived both is ended, and its nanny starts a fresh one
   (:func:`exit_worker`). A worker with more threads runs other tasks and is kept: the
   stuck call holds one of its threads until it returns (its result is dropped).

The worker takes the last two steps itself when nobody else does: a caller that Ctrl-C
ended, or that was killed, is gone before it can (its tasks are released when its client
disconnects, which marks them cancelled here). A watchdog thread (:func:`_watch`) gives a
chunk whose task stopped ``ORPHAN_GRACE`` seconds to end, then interrupts its call, and a
second later ends a one-thread worker whose call still runs. A caller that is alive has
done both by then (after a fifth of a second to a second, see ``ClusterExecutor.withdraw``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from just_distribute import channel as _channel
from just_distribute.executors import wire as _wire
from just_distribute.executors.chunk import run_chunk

__all__ = [
    "START_TOPIC",
    "UPDATE_TOPIC",
    "calls_running",
    "cancelled_check",
    "exit_worker",
    "importable",
    "interrupt_calls",
    "run_on_worker",
]

#: The dask event topic on which a worker announces that it starts a chunk.
START_TOPIC = "just-distribute-chunk-started"
#: The dask event topic on which a worker sends the updates of a running chunk.
UPDATE_TOPIC = "just-distribute-chunk-updates"
_WORKER_CACHE_SIZE = 8
#: Seconds a chunk whose task stopped (cancelled, released) may run on before the worker
#: interrupts its call itself; one more, and a one-thread worker whose call still runs ends.
#: Longer than the caller's own steps take (``WITHDRAW_GRACE``, 1 s, and 0.2 s after it).
ORPHAN_GRACE = 2.0
_WATCH_SECONDS = 0.25
_worker_cache: OrderedDict[str, Any] = OrderedDict()
_worker_lock = threading.Lock()


class _Running:
    """A chunk running in this worker: the thread that runs it, whether it was interrupted
    (at most once), its task's stop check, and since when that check says stop."""

    __slots__ = ("alone", "fired", "ident", "since", "stopped")

    def __init__(self, stopped: Callable[[], bool] | None = None, alone: bool = False) -> None:
        self.ident = threading.get_ident()
        self.fired = False
        self.stopped = stopped
        self.since: float | None = None
        self.alone = alone  # the worker has one thread: ending it frees nobody else's call

    def interrupt(self) -> None:
        """Raise ``KeyboardInterrupt`` in the chunk's thread, once (under ``_running_lock``)."""
        if not self.fired:
            self.fired = True
            _set_async_exc(self.ident, KeyboardInterrupt)


#: The chunks running in this worker process, by task key (see :func:`interrupt_calls`).
_running: dict[str, _Running] = {}
_running_lock = threading.Lock()


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    # None clears an exception raised but not yet seen by the thread.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


def _finish(key: str, entry: _Running) -> None:
    """The chunk's calls are over: it can no longer be interrupted (idempotent)."""
    with _running_lock:
        if _running.get(key) is entry:
            del _running[key]
        if entry.fired:  # raised, and maybe not seen yet: it must not hit what comes next
            _set_async_exc(entry.ident, None)


_watcher: threading.Thread | None = None
#: Set while chunks run here: an idle worker's watchdog sleeps without waking (a service of
#: 32 workers would otherwise wake 128 times a second for nothing).
_busy = threading.Event()


def _watch() -> None:
    """The watchdog of this worker's running chunks (see the module's docstring)."""
    while True:
        _busy.wait()
        time.sleep(_WATCH_SECONDS)
        now = time.monotonic()
        stuck = False
        with _running_lock:
            if not _running:
                _busy.clear()  # (set again, under this lock, by the next chunk)
            for entry in _running.values():
                try:
                    stopped = entry.stopped is not None and entry.stopped()
                except Exception:  # the worker is closing: its tasks go with it
                    stopped = False
                if not stopped:
                    entry.since = None
                    continue
                if entry.since is None:
                    entry.since = now
                elif now - entry.since >= ORPHAN_GRACE + 1.0 and entry.fired and entry.alone:
                    stuck = True
                elif now - entry.since >= ORPHAN_GRACE:
                    entry.interrupt()
        if stuck:
            # A call blocked in C code, which the interrupt waits for, holds the worker's
            # only thread for a caller that left: a fresh process serves the next caller.
            os.write(2, b"just_distribute: a stopped chunk's call is still running after "
                        b"its interrupt; ending this one-thread worker (its nanny starts "
                        b"a fresh one)\n")
            _end_process()


def _start_watch() -> None:
    global _watcher
    with _running_lock:
        if _watcher is None:
            _watcher = threading.Thread(
                target=_watch, name="just_distribute-watch", daemon=True
            )
            _watcher.start()


def interrupt_calls(keys: list[str]) -> bool:
    """Run on a worker by the caller: interrupt the running calls of these withdrawn chunks.

    Returns True if one of them was still running (and is now interrupted).
    """
    found = False
    with _running_lock:
        for key in keys:
            entry = _running.get(key)
            if entry is not None:
                found = True
                entry.interrupt()
    return found


def calls_running(keys: list[str]) -> bool:
    """Run on a worker by the caller: does a call of one of these chunks still run here?"""
    with _running_lock:
        return any(key in _running for key in keys)


def _load_function(key: str, payload: bytes) -> Any:
    with _worker_lock:
        fn = _worker_cache.get(key)
        if fn is not None:
            _worker_cache.move_to_end(key)
            return fn
    fn = _wire.loads(payload)
    with _worker_lock:
        _worker_cache[key] = fn
        while len(_worker_cache) > _WORKER_CACHE_SIZE:
            _worker_cache.popitem(last=False)
    return fn


def importable(names: list[str]) -> list[str]:
    """Which of these top-level modules this worker can import (found, not imported)."""
    import importlib.util

    found = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            pass
    return found


def run_on_worker(
    payload: bytes, key: str, data: bytes, stop_on_error: bool, by_value: bool = False,
    versions: dict[str, str] | None = None, ticks: bool = False,
) -> Any:
    """The dask task of one chunk: rebuild the function and arguments, run, pack the outcome.

    ``by_value``: some of the code came by value; the outcome goes back with cloudpickle,
    so that the caller gets instances of its own classes back. ``versions``: the caller's
    (see :func:`.cluster_code.versions`); when this worker's differ, nothing is unpickled and
    the caller is told which. ``ticks``: the run shows progress; the running chunk reports
    how many calls are done with its update events.

    Returns the outcome's bytes; or, when the chunk's calls left updates unsent at its end,
    ``(outcome, worker name, updates)``: the last updates travel with the outcome.
    """
    from distributed import get_worker

    from just_distribute.executors.cluster_code import versions as here

    if versions is not None and versions != here():
        try:
            me = str(get_worker().address)
        except ValueError:
            me = "?"
        # A plain dict of strings: it loads whatever the versions on either side.
        return pickle.dumps(("mismatch", {me: here()}, None), protocol=2)

    try:
        fn = _load_function(key, payload)
        columns = _wire.loads(data)
    except ModuleNotFoundError as exc:  # the caller answers with a resend by value
        return _wire.dumps(("unloadable", exc.name, traceback.format_exc()))
    except Exception:
        tb = traceback.format_exc()
        return _wire.dumps(("unloadable", None, tb))
    outbox: _channel.Outbox | None = None
    stopped = None
    alone = False
    key_text = f"local-{id(columns)}"  # (not on a dask worker: nobody interrupts it)
    try:
        worker = get_worker()
    except ValueError:
        name = "dask"
    else:
        name = str(worker.name)
        # Tell the caller the chunk starts now: its timeout= clock starts here, not when
        # the chunk was queued.
        task_key = worker.get_current_task()
        worker.log_event(START_TOPIC, [task_key, worker.address])
        key_text = str(task_key)
        outbox = _channel.Outbox(functools.partial(_send_updates, worker, key_text))
        stopped = cancelled_check(worker, task_key)
        alone = getattr(getattr(worker, "state", None), "nthreads", 0) == 1
        _start_watch()
    channel = None if outbox is None else outbox.ticking if ticks else outbox.channel
    entry = _Running(stopped, alone)
    with _running_lock:
        _running[key_text] = entry
        _busy.set()
    try:
        try:
            result = run_chunk(
                fn, columns, stop_on_error, name, "cluster", True, channel, stopped=stopped
            )
        finally:
            _finish(key_text, entry)
    except KeyboardInterrupt:
        if not entry.fired:
            raise
        # Withdrawn, then interrupted (interrupt_calls): the caller no longer waits for
        # this outcome; the exception was seen, so nothing is pending any more.
        _finish(key_text, entry)
        if outbox is not None:
            outbox.close()
        return _wire.dumps(
            ("unsendable", None, "the chunk was withdrawn: its running call was interrupted")
        )
    tail, dropped = outbox.close() if outbox is not None else ([], 0)
    # A Pool's function asks for results the standard pickle takes (MaybeEncodingError).
    strict = getattr(fn, "standard_pickle_results", False)
    outcome = _pack(result, stop_on_error, by_value, strict)
    if tail or dropped:
        # The last updates travel with the outcome: the sending thread has not sent them.
        return (outcome, name, _channel.encode(tail, dropped))
    return outcome


def _pack(result: Any, stop_on_error: bool, by_value: bool, strict: bool = False) -> bytes:
    dumps_by_value = None
    if by_value:
        import cloudpickle

        dumps_by_value = cloudpickle.dumps
    return _wire.pack_outcome(result, stop_on_error, dumps_by_value, strict)


def _send_updates(
    worker: Any, key: str, records: list[Any], dropped: int, done: int | None = None
) -> None:
    worker.log_event(
        UPDATE_TOPIC, (key, str(worker.name), _channel.encode(records, dropped, done))
    )


def cancelled_check(worker: Any, key: Any) -> Any:
    """A check whether the client cancelled the running task ``key`` (None if unknown).

    A dask worker cannot stop a running task, but it marks it "cancelled" when the client
    cancels its future: the chunk reads that mark (a local lookup, no message) between
    calls and ends early.
    """
    tasks = getattr(getattr(worker, "state", None), "tasks", None)
    if not isinstance(tasks, dict):
        return None

    def stopped() -> bool:
        ts = tasks.get(key)
        return ts is None or getattr(ts, "state", "") in ("cancelled", "released", "forgotten")

    return stopped


async def exit_worker() -> None:
    """Run on a worker whose withdrawn call is stuck: end the process (its nanny starts a
    fresh one). A coroutine function: dask runs only those without waiting for an answer."""
    _end_process()


def _end_process() -> None:
    """End this worker process now: its nanny starts a fresh one (75: EX_TEMPFAIL)."""
    os._exit(75)
