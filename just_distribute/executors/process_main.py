"""The loop of a ``job="compute"`` worker process.

Started by :mod:`just_distribute.executors.processes` as a fresh interpreter (no fork, so no
inherited locks or threads, and no re-import of the caller's ``__main__``). It reads chunks
from a socket, runs them and writes back their outcomes, until the socket closes or its
parent disappears. It ignores SIGINT: the parent decides what a Ctrl-C stops.
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
import traceback
from typing import Any

_PAYLOAD_CACHE_SIZE = 8


def _watch_parent(parent_pid: int) -> None:
    # A worker whose parent died (SIGKILL, OOM) must not run on as an orphan.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def _portable_result(result: Any, stop_on_error: bool, strict: bool = False) -> bytes:
    """Pickle an outcome; replace what cannot be pickled by a description of it.

    A result that cannot be sent back becomes the error of its own call (a
    :class:`~just_distribute.errors.ReceiveError`), so that it costs no other call's result.
    ``strict`` (a ``Pool``'s function says ``standard_pickle_results``): results must pickle
    with the standard pickle, as in ``multiprocessing``; dill is not tried for them.
    """
    from just_distribute.errors import ReceiveError, ResultEncodingError
    from just_distribute.executors.chunk import CallError, ChunkResult
    from just_distribute.executors.wire import PROTOCOL, dumps, loads

    try:
        data = pickle.dumps(("ok", result), PROTOCOL) if strict else dumps(("ok", result))
        for err in result.errors:
            # An exception whose __init__ takes other arguments than it passes to
            # Exception pickles, but cannot be rebuilt: that would cost the whole chunk.
            loads(dumps(err.exc))
        return data
    except Exception:
        pass
    errors = []
    for err in result.errors:
        try:
            loads(dumps(err.exc))
            errors.append(err)
        except Exception:
            stand_in = RuntimeError(f"{type(err.exc).__qualname__}: {err.exc}")
            errors.append(CallError(err.at, stand_in, err.tb))
    stand_ins = {e.at: e.exc for e in errors}
    values = [stand_ins.get(i, v) for i, v in enumerate(result.values)]
    for i, value in enumerate(values):
        if i in stand_ins:
            continue
        if strict:
            try:
                pickle.dumps(value, PROTOCOL)
            except Exception as exc:
                values[i] = ResultEncodingError(exc, value)
                errors.append(CallError(i, values[i], None))
                continue
        if not _picklable(value):
            values[i] = ReceiveError(
                f"the result of this call ({type(value).__qualname__}) cannot be sent back "
                f"to the caller: {_why(value)}. Return plain data (numbers, strings, lists, "
                f"dicts, arrays) instead of objects bound to this process (files, locks, "
                f"sockets)."
            )
            errors.append(CallError(i, values[i], None))
    errors.sort(key=lambda e: e.at)
    if stop_on_error and errors:  # the caller acts on the first error only
        values, errors = values[: errors[0].at], errors[:1]
    patched = ChunkResult(values, errors, result.worker, result.started, result.ended)
    try:
        return dumps(("ok", patched))
    except Exception as exc:
        bad = next(
            (i for i, v in enumerate(result.values) if not _picklable(v)), None
        )
        what = (
            f"the result of call {bad} ({type(result.values[bad]).__qualname__})"
            if bad is not None
            else "a result"
        )
        return pickle.dumps(
            ("unsendable", bad, f"{what} cannot be sent back to the caller: "
             f"{type(exc).__name__}: {exc}. Return plain data (numbers, strings, lists, dicts, "
             f"arrays) instead of objects bound to this process (files, locks, sockets).")
        )


def _why(value: Any) -> str:
    from just_distribute.executors.wire import dumps

    try:
        dumps(value)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "?"


def _picklable(value: Any) -> bool:
    from just_distribute.executors.wire import dumps

    try:
        dumps(value)
    except Exception:
        return False
    return True


def _send_updates(conn: socket.socket, records: list[Any], dropped: int) -> None:
    """Send a batch of the running chunk's updates (a frame between its start and outcome)."""
    from just_distribute.executors.wire import send_frame
    from just_distribute.updates import FRAME_TAG, encode

    send_frame(conn, FRAME_TAG + encode(records, dropped))


def main() -> None:
    """Serve chunks on the socket whose file descriptor is ``sys.argv[1]``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from just_distribute.executors.wire import recv_frame, send_frame

    conn = socket.socket(fileno=int(sys.argv[1]))
    sys_path, parent_pid, name, init_bytes = pickle.loads(recv_frame(conn))
    sys.path[:] = [p for p in sys_path if p not in ("",)] + [""]
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()

    from just_distribute.executors.chunk import run_chunk
    from just_distribute.executors.wire import loads
    from just_distribute.updates import Outbox

    if init_bytes is not None:
        try:
            initializer, initargs = loads(init_bytes)
            initializer(*initargs)
        except BaseException as exc:
            tb = "".join(traceback.format_exception(exc))
            send_frame(conn, pickle.dumps(("init-failed", None, tb)))
            os._exit(3)
    send_frame(conn, pickle.dumps(("ready", os.getpid(), None)))

    cache: dict[str, Any] = {}
    outbox = Outbox(functools.partial(_send_updates, conn))  # one for every chunk
    while True:
        try:
            message = recv_frame(conn)
        except (EOFError, OSError):
            break
        key, payload, data, stop_on_error = pickle.loads(message)
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
            tb = "".join(traceback.format_exception(exc))
            send_frame(conn, pickle.dumps(("unloadable", None, tb)))
            continue
        result = run_chunk(fn, columns, stop_on_error, name, "compute", True, outbox.channel)
        try:
            tail, dropped = outbox.drain()
            if tail or dropped:  # before the outcome: the last values arrive first
                _send_updates(conn, tail, dropped)
            strict = getattr(fn, "standard_pickle_results", False)  # a Pool's function
            send_frame(conn, _portable_result(result, stop_on_error, strict))
        except OSError:  # the caller is gone (killed, or it killed us): nothing to report
            break
    conn.close()


if __name__ == "__main__":
    main()
