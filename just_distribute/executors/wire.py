"""Serialisation for sending work to other processes.

The standard C pickle is several times faster than dill on plain data, so everything is
tried with it first and falls back to dill only for what it cannot handle (lambdas,
closures, functions defined in ``__main__``). A decorated function is sent as a reference
to its original function, so that the worker never recurses into a pool.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pickle
import socket
import struct
import types
from typing import Any

__all__ = ["dumps", "dumps_function", "load_wrapped", "loads", "recv_frame", "send_frame"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

_HEADER = struct.Struct("!Q")
#: Socket buffers large enough for a typical chunk, so a message crosses in few system calls.
SOCKET_BUFFER = 4 << 20


def send_frame(sock: socket.socket, data: bytes) -> None:
    """Send one length-prefixed message.

    ``sendall`` on a blocking stream socket releases the GIL for the whole transfer, where
    ``multiprocessing.connection`` writes (and re-takes the GIL) once per buffer-full: on a
    busy caller every re-take can wait a full switch interval.
    """
    if len(data) < 65536:
        sock.sendall(_HEADER.pack(len(data)) + data)
    else:
        sock.sendall(_HEADER.pack(len(data)))
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        # MSG_WAITALL: one system call (one GIL release) for the whole message.
        k = sock.recv_into(view[got:], n - got, socket.MSG_WAITALL)
        if k == 0:
            raise EOFError("the connection closed")
        got += k
    return buf


def recv_frame(sock: socket.socket) -> bytearray:
    """Receive one message sent by :func:`send_frame`.

    Raises:
        EOFError: the other side closed the connection.
    """
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return _recv_exact(sock, n)


def tune_socket(sock: socket.socket) -> None:
    """Enlarge the buffers of a worker socket (best effort)."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


def load_wrapped(module: str, qualname: str) -> Any:
    """Import ``module.qualname`` and return the plain function behind a decorator."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "__wrapped__", obj)


def _reference_to_wrapped(fn: types.FunctionType) -> tuple[Any, ...] | None:
    """If ``fn`` hides behind a decorator at its import path, return a reduce tuple for it."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        found = load_wrapped(module, qualname)
    except Exception:
        return None
    if found is fn:
        return (load_wrapped, (module, qualname))
    return None


class _FunctionPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and obj is not load_wrapped:
            # (load_wrapped itself, named in every reference, pickles as a plain global:
            # rewriting it too would recurse until the pickler gives up and dill takes over.)
            ref = _reference_to_wrapped(obj)
            if ref is not None:
                return ref
            if obj.__module__ == "__main__":
                # The worker has no such __main__: make the caller fall back to dill,
                # which sends such functions by value.
                raise pickle.PicklingError("function defined in __main__")
        return NotImplemented


def process_bound(obj: Any) -> str | None:
    """If ``obj`` only makes sense in this process, say what it is; else ``None``.

    dill would copy locks and reopen files by name in the worker: a copy that protects or
    shares nothing, so such objects are refused instead of silently duplicated.
    """
    import _thread

    if isinstance(obj, _thread.LockType | _thread.RLock):
        return f"a thread lock ({type(obj).__name__}): it synchronises one process only"
    if isinstance(obj, io.IOBase) and not isinstance(obj, io.BytesIO | io.StringIO):
        return f"an open file or stream ({type(obj).__name__}): it belongs to this process"
    return None


def _dill_dumps(obj: Any) -> bytes:
    import dill  # imported lazily: most payloads never need it

    class _Pickler(dill.Pickler):  # type: ignore[misc]
        def reducer_override(self, value: Any) -> Any:
            what = process_bound(value)
            if what is not None:
                raise pickle.PicklingError(f"{what}, it cannot be sent to another one")
            return NotImplemented

    buf = io.BytesIO()
    _Pickler(buf, protocol=PROTOCOL, recurse=True).dump(obj)
    return buf.getvalue()


def dumps_function(obj: Any) -> bytes:
    """Serialise a function (with its bound constants), by reference where possible."""
    buf = io.BytesIO()
    try:
        _FunctionPickler(buf, protocol=PROTOCOL).dump(obj)
        return buf.getvalue()
    except Exception:
        return _dill_dumps(obj)


def dumps(obj: Any) -> bytes:
    """Serialise data: the C pickle, else dill. Raises the error of the last attempt."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return _dill_dumps(obj)


def loads(data: bytes | bytearray) -> Any:
    """Rebuild what :func:`dumps` or :func:`dumps_function` wrote (dill output included)."""
    try:
        return pickle.loads(data)
    except Exception:
        import dill

        return dill.loads(data)
