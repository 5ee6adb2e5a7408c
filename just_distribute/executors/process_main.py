"""The loop of a ``job="compute"`` worker process.

Started by :mod:`just_distribute.executors.processes` as a fresh interpreter (no fork, so no
inherited locks or threads, and no re-import of the caller's ``__main__``). It reads chunks
from a socket, runs them and writes back their outcomes, until the socket closes or its
parent disappears. It ignores SIGINT: the parent decides what a Ctrl-C stops.

The messages between the caller (:mod:`~just_distribute.executors.processes`) and this
loop, each one frame:

Caller to worker:

- ``(sys_path, parent_pid, name, initializer)``: the first frame; set up, run the
  initializer. The answer: ``("ready", pid, None)`` or ``("init-failed", None, traceback)``.
- ``(key, function or None, arguments or None, stop_on_error, seq, ticks)``: a chunk
  (``seq`` numbers it for the control socket; ``ticks``: the run shows progress). The
  function is sent once per worker and cached by key; sent alone, it is answered
  ``("loaded", None, None)``.

Worker to caller, for each chunk:

- ``("ok", ChunkResult)``: the chunk ran: its values and errors (exceptions as records,
  :func:`~just_distribute.executors.wire.pack_outcome`).
- ``("unsendable", ChunkResult, message)``: a result or exception could not be pickled: it
  became its call's ``ReceiveError``.
- ``("unloadable", None, traceback)``: the function or the arguments could not be rebuilt.
- ``b"U"`` + the pickle of ``(records, dropped, done)``, between a chunk's start and its
  outcome: a batch of the calls' ``update()`` records and, when the chunk has ``ticks``, how
  many of its calls are done (``None`` if unchanged; at most every 0.1 s)
  (:mod:`~just_distribute.updates`; the first byte tells it from an outcome, whose pickle
  starts with ``0x80``).

Either way, a function, the arguments or an outcome whose large arrays went through shared
memory is ``b"S"`` + the segment's name and a small pickle instead of the whole pickle
(:mod:`~just_distribute.executors.shm`; ``wire.loads`` reads both forms).

The interpreter is started as ``python -P -c BOOTSTRAP fd ctl`` (:data:`BOOTSTRAP`): ``-P``
keeps the caller's working directory off ``sys.path`` while the standard library loads (a
``socket.py`` there would shadow the real one); the caller's own ``sys.path`` arrives in the
first frame. The bootstrap registers the two packages ``just_distribute`` and
``just_distribute.executors`` without running their ``__init__`` (which loads the
configuration, the registry, the executors' base and the error classes: most of a cold
worker's start-up): each runs in place on the first lookup of a name it defines, such as a
user's function doing ``from just_distribute import update``. So a worker loads only this
module, :mod:`~just_distribute.executors.wire`, :mod:`~just_distribute.executors.chunk` and
:mod:`~just_distribute.updates` before its first chunk.

A second socket (its descriptor in ``sys.argv[2]``) carries the caller's requests to stop a
running chunk between two calls (a run that ended early).

The cluster's dask task (``cluster_worker.run_on_worker``) answers with the same outcome
kinds (``"unloadable"`` names the missing module, so that the caller resends the chunk once
by value), plus ``("mismatch", {worker: versions}, None)`` when the worker's Python,
just_distribute, dill or cloudpickle differ from the caller's (nothing is unpickled then);
its ``update()`` batches travel as dask events on ``UPDATE_TOPIC``, and the last batch of a
chunk with its outcome, as ``(outcome, worker, batch)``.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import socket
import sys
import threading
import time
import types

TYPE_CHECKING = False  # (not typing's: a worker loads this module, see chunk.py)

if TYPE_CHECKING:
    from typing import Any

_PAYLOAD_CACHE_SIZE = 8

#: The ``-c`` program of a worker interpreter (see the module's docstring).
BOOTSTRAP = (
    "import sys, importlib.util as u\n"
    "from importlib.machinery import PathFinder\n"
    "s = u.find_spec('just_distribute')\n"
    "t = PathFinder.find_spec('just_distribute.executors', s.submodule_search_locations)\n"
    "for spec in (s, t):\n"
    "    sys.modules[spec.name] = u.module_from_spec(spec)\n"
    "sys.modules[s.name].executors = sys.modules[t.name]\n"
    "import just_distribute.executors.process_main as m\n"
    "m.main(deferred=(s.name, t.name))\n"
)
_init_lock = threading.Lock()


class _DeferredInit(types.ModuleType):
    """A package registered before its ``__init__`` ran: the first lookup of a name it does
    not hold yet runs it, in place (so every reference to the package object stays good).

    A submodule's name is the exception: ``from package import submodule`` looks the name
    up before it imports the submodule, and gets the submodule alone, as ``import
    package.submodule`` does (the worker's ``shm`` for a message with arrays, at exit).
    """

    def __getattr__(self, name: str) -> Any:
        from importlib.machinery import PathFinder

        full = f"{self.__name__}.{name}"
        if full in sys.modules or PathFinder.find_spec(full, self.__path__) is not None:
            import importlib

            return importlib.import_module(full)
        with _init_lock:
            if type(self) is _DeferredInit:
                # The class goes first: a lookup made while __init__ runs sees a partly
                # initialised package, as with any import, instead of running it again.
                module: types.ModuleType = self
                module.__class__ = types.ModuleType
                spec = self.__spec__
                assert spec is not None and spec.loader is not None
                spec.loader.exec_module(self)
        return getattr(self, name)


def defer_package_init(names: tuple[str, ...]) -> None:
    """Make the packages ``names`` (registered by :data:`BOOTSTRAP`, their ``__init__`` not
    run) run their ``__init__`` on the first lookup of a name they do not hold.

    Called once the worker's own modules are loaded (a submodule imported meanwhile is not
    a lookup that runs an ``__init__`` either).
    """
    for name in names:
        module = sys.modules[name]
        if type(module) is types.ModuleType:
            module.__class__ = _DeferredInit


def _watch_parent(parent_pid: int) -> None:
    # A worker whose parent died (SIGKILL, OOM) must not run on as an orphan, nor leave the
    # parent's shared-memory segments behind.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            from just_distribute.executors import shm

            shm.sweep(parent_pid)
            os._exit(0)


class _Control:
    """Which chunk the parent asked to stop, read from the control socket by a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.stop_seq = -1
        self.sock = sock

    def stopped(self, seq: int) -> bool:
        return self.stop_seq == seq

    def listen(self) -> None:
        from just_distribute.executors.wire import recv_frame

        while True:
            try:
                self.stop_seq = pickle.loads(recv_frame(self.sock))
            except (EOFError, OSError):
                return


def _send_updates(
    conn: socket.socket, records: list[Any], dropped: int, done: int | None = None
) -> None:
    """Send a batch of the running chunk's updates (a frame between its start and outcome)."""
    from just_distribute.channel import FRAME_TAG, encode
    from just_distribute.executors.wire import send_frame

    send_frame(conn, FRAME_TAG + encode(records, dropped, done))


def _format(exc: BaseException) -> str:
    import traceback  # only on a failure: most workers never format a traceback here

    return "".join(traceback.format_exception(exc))


def main(deferred: tuple[str, ...] = ()) -> None:
    """Serve chunks on the socket whose file descriptor is ``sys.argv[1]``.

    Args:
        deferred: packages registered without running their ``__init__``
            (:func:`defer_package_init`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from just_distribute.channel import Outbox
    from just_distribute.executors.chunk import run_chunk
    from just_distribute.executors.wire import loads, pack_outcome, recv_frame, send_frame

    defer_package_init(deferred)

    conn = socket.socket(fileno=int(sys.argv[1]))
    control = _Control(socket.socket(fileno=int(sys.argv[2])))
    threading.Thread(target=control.listen, daemon=True).start()
    sys_path, parent_pid, name, init_bytes = pickle.loads(recv_frame(conn))
    sys.path[:] = [p for p in sys_path if p not in ("",)] + [""]
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()

    if init_bytes is not None:
        try:
            initializer, initargs = loads(init_bytes)
            initializer(*initargs)
        except BaseException as exc:
            send_frame(conn, pickle.dumps(("init-failed", None, _format(exc))))
            os._exit(3)
    send_frame(conn, pickle.dumps(("ready", os.getpid(), None)))

    cache: dict[str, Any] = {}
    outbox = Outbox(functools.partial(_send_updates, conn))  # one for every chunk
    while True:
        try:
            message = recv_frame(conn)
        except (EOFError, OSError):
            break
        key, payload, data, stop_on_error, seq, ticks = pickle.loads(message)
        try:
            fn = cache.get(key)
            if fn is None:
                fn = loads(payload)
                if len(cache) >= _PAYLOAD_CACHE_SIZE:
                    cache.pop(next(iter(cache)))
                cache[key] = fn
            if data is None:  # only the function: the caller waits for it to be loaded
                send_frame(conn, pickle.dumps(("loaded", None, None)))
                continue
            columns = loads(data)
        except BaseException as exc:
            send_frame(conn, pickle.dumps(("unloadable", None, _format(exc))))
            continue
        result = run_chunk(
            fn, columns, stop_on_error, name, "compute", True,
            outbox.ticking if ticks else outbox.channel,
            stopped=functools.partial(control.stopped, seq),
        )
        try:
            tail, dropped = outbox.drain()
            if tail or dropped:  # before the outcome: the last values arrive first
                _send_updates(conn, tail, dropped)
            strict = getattr(fn, "standard_pickle_results", False)  # a Pool's function
            send_frame(conn, pack_outcome(result, stop_on_error, strict=strict, shared=parent_pid))
        except OSError:  # the caller is gone (killed, or it killed us): nothing to report
            break
        del result, columns  # a chunk's arrays (views of its segment) go before the next
    conn.close()
    from just_distribute.executors import shm  # (at exit: no cost to a worker's start)

    shm.reap_if_orphaned(parent_pid)


if __name__ == "__main__":
    main()
