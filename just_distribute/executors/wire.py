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
import sys
import types

TYPE_CHECKING = False  # (not typing's: a worker loads this module, see chunk.py)
if TYPE_CHECKING:
    from typing import Any

    from just_distribute.executors.chunk import ChunkResult

__all__ = [
    "ExceptionRecord",
    "FrameCounter",
    "dumps",
    "dumps_function",
    "encode_exception",
    "load_wrapped",
    "loads",
    "pack_outcome",
    "rebuild_exception",
    "rebuild_outcome",
    "recv_frame",
    "send_frame",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

_HEADER = struct.Struct("!Q")
#: Socket buffers large enough for a typical chunk, so a message crosses in few system calls.
SOCKET_BUFFER = 4 << 20


class FrameCounter:
    """Frames and bytes this process has sent and received through the framing below.

    Cheap enough to keep on (a few additions per message); what shows that large arrays
    travel through shared memory and not through the sockets.
    """

    def __init__(self) -> None:
        self.frames_sent = self.bytes_sent = self.largest_sent = 0
        self.frames_received = self.bytes_received = self.largest_received = 0

    def snapshot(self) -> dict[str, int]:
        """The counts now, as a dict."""
        return dict(vars(self))


#: This process's counts (approximate under many threads: no lock on the hot path).
frames = FrameCounter()


def send_frame(sock: socket.socket, data: bytes) -> None:
    """Send one length-prefixed message.

    ``sendall`` on a blocking stream socket releases the GIL for the whole transfer, where
    ``multiprocessing.connection`` writes (and re-takes the GIL) once per buffer-full: on a
    busy caller every re-take can wait a full switch interval.
    """
    frames.frames_sent += 1
    frames.bytes_sent += len(data)
    if len(data) > frames.largest_sent:
        frames.largest_sent = len(data)
    header = _HEADER.pack(len(data))
    if len(data) < 65536:
        sock.sendall(header + data)
        return
    # Header and body in one system call, without joining them (a copy of the body).
    sent = sock.sendmsg([header, data])
    if sent < len(header) + len(data):  # interrupted part-way: the rest in order
        if sent < len(header):
            sock.sendall(header[sent:])
        sock.sendall(memoryview(data)[max(0, sent - len(header)):])


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
    data = _recv_exact(sock, n)
    frames.frames_received += 1
    frames.bytes_received += n
    if n > frames.largest_received:
        frames.largest_received = n
    return data


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


def _is_array(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


def _dill_pickler(file: Any, buffer_callback: Any = None) -> Any:
    import dill  # imported lazily: most payloads never need it

    class _Pickler(dill.Pickler):  # type: ignore[misc]
        def reducer_override(self, value: Any) -> Any:
            what = process_bound(value)
            if what is not None:
                raise pickle.PicklingError(f"{what}, it cannot be sent to another one")
            if buffer_callback is not None and _is_array(value):
                # dill's own reducer copies the array into the stream; numpy's protocol-5
                # one hands its buffer to buffer_callback (shared memory when large).
                return value.__reduce_ex__(5)
            return NotImplemented

    return _Pickler(file, protocol=PROTOCOL, recurse=True, buffer_callback=buffer_callback)


def _dill_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _dill_pickler(buf).dump(obj)
    return buf.getvalue()


def dumps_function(obj: Any, shared: bool = False) -> bytes:
    """Serialise a function (with its bound constants), by reference where possible.

    ``shared``: its large buffers (array constants) go into one shared-memory segment that
    every worker process maps (:mod:`~just_distribute.executors.shm`), kept while the
    returned bytes live.
    """
    if shared:
        from just_distribute.executors import shm

        try:
            return shm.dumps(obj, lambda f, cb: _FunctionPickler(f, 5, buffer_callback=cb), True)
        except Exception:
            return shm.dumps(obj, _dill_pickler, True)
    buf = io.BytesIO()
    try:
        _FunctionPickler(buf, protocol=PROTOCOL).dump(obj)
        return buf.getvalue()
    except Exception:
        return _dill_dumps(obj)


def dumps(obj: Any, shared: bool = False) -> bytes:
    """Serialise data: the C pickle, else dill. Raises the error of the last attempt.

    ``shared``: large buffers (numpy arrays, pandas blocks) go through shared memory, for a
    worker process on this machine (:mod:`~just_distribute.executors.shm`).
    """
    if shared:
        from just_distribute.executors import shm

        try:
            return shm.dumps(obj)
        except Exception:
            return shm.dumps(obj, _dill_pickler)
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return _dill_dumps(obj)


def loads(data: bytes | bytearray) -> Any:
    """Rebuild what :func:`dumps` or :func:`dumps_function` wrote (dill output included)."""
    if data[:1] == b"S":  # shm.TAG: large buffers in a shared-memory segment
        from just_distribute.executors import shm

        return shm.loads(data)
    try:
        return pickle.loads(data)
    except Exception:
        import dill

        return dill.loads(data)


# -- exceptions and outcomes ------------------------------------------------------------
#
# An exception crosses as an ExceptionRecord: its class by name, its args and attributes
# as data, and the worker's own pickle of it. The caller then rebuilds an instance of *its
# own* class of that name: a class defined in the caller's __main__ (which a worker only
# holds as a copy sent by value, so that plain unpickling would give a look-alike class that
# ``except`` does not catch), or one whose ``__init__`` takes other arguments than it passes
# to Exception (which plain unpickling cannot call).


class ExceptionRecord:
    """An exception on its way from a worker to the caller.

    Attributes:
        module: ``type(exc).__module__``.
        qualname: ``type(exc).__qualname__``.
        args: ``exc.args`` (an argument that cannot be pickled travels as its repr).
        state: the instance attributes that can be pickled (notes included).
        text: ``str(exc)``, for a stand-in.
        blob: the worker's pickle of the whole exception, if it has one.
        lost: names of attributes that could not be pickled.
    """

    __slots__ = ("args", "blob", "lost", "module", "qualname", "state", "text")

    def __init__(
        self, module: str, qualname: str, args: tuple[Any, ...], state: dict[str, Any],
        text: str, blob: bytes | None, lost: tuple[str, ...],
    ) -> None:
        self.module = module
        self.qualname = qualname
        self.args = args
        self.state = state
        self.text = text
        self.blob = blob
        self.lost = lost

    def __repr__(self) -> str:
        return f"ExceptionRecord({self.module}.{self.qualname}: {self.text!r})"


def _sendable(value: Any) -> bool:
    try:
        dumps(value)
    except Exception:
        return False
    return True


def encode_exception(exc: BaseException) -> ExceptionRecord:
    """Describe ``exc`` so that :func:`rebuild_exception` can make it again elsewhere."""
    cls = type(exc)
    args = tuple(a if _sendable(a) else repr(a) for a in exc.args)
    state: dict[str, Any] = {}
    lost: list[str] = []
    for name, value in getattr(exc, "__dict__", {}).items():
        if _sendable(value):
            state[name] = value
        else:
            lost.append(name)
    try:
        text = str(exc)
    except Exception:
        text = repr(exc.args)
    try:
        blob: bytes | None = dumps(exc)
    except Exception:
        blob = None
    return ExceptionRecord(cls.__module__, cls.__qualname__, args, state, text, blob, tuple(lost))


def _caller_class(module: str, qualname: str) -> type[BaseException] | None:
    """The caller's own class of that name, if it has one (``__main__`` included)."""
    mod = sys.modules.get(module)
    if mod is None and module != "__main__":
        try:
            mod = importlib.import_module(module)
        except Exception:
            return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def _instance(cls: type[BaseException], rec: ExceptionRecord) -> BaseException | None:
    """An instance of ``cls`` with the record's args and attributes, without ``__init__``."""
    try:
        exc = cls.__new__(cls, *rec.args)
    except Exception:
        try:
            exc = cls.__new__(cls)
        except Exception:
            return None
    try:
        if exc.args != rec.args:
            exc.args = rec.args
        for name, value in rec.state.items():
            setattr(exc, name, value)
    except Exception:
        return None
    return exc


def rebuild_exception(rec: ExceptionRecord) -> BaseException:
    """The caller's own exception from a record; a :class:`StandInError` only if no such
    class can be found here and the worker's pickle of it cannot be loaded either."""
    cls = _caller_class(rec.module, rec.qualname)
    loaded: BaseException | None = None
    if rec.blob is not None:
        try:
            value = loads(rec.blob)
        except Exception:
            value = None
        if isinstance(value, BaseException):
            loaded = value
    # The ordinary pickle keeps what only C code knows (OSError.errno, ...): use it when it
    # gave the caller's very class, else build the instance field by field. For a class
    # the caller cannot name (a local one), the worker's copy is all there is.
    exc = loaded
    if cls is not None and type(loaded) is not cls:
        exc = _instance(cls, rec)
    if exc is None:
        from just_distribute.errors import StandInError

        where = f"{rec.module}.{rec.qualname}"
        exc = StandInError(
            f"{rec.qualname}: {rec.text} (a stand-in: the class {where} cannot be found or "
            f"rebuilt in the caller; make its module importable here to get the exception "
            f"itself)",
            rec.module, rec.qualname,
        )
    if rec.lost:
        exc.add_note(
            f"just_distribute: attribute(s) {', '.join(rec.lost)} of this exception could "
            f"not be sent back from the worker (they cannot be pickled)"
        )
    return exc


def pack_outcome(
    result: ChunkResult,
    stop_on_error: bool,
    by_value: Any = None,
    strict: bool = False,
    shared: int | None = None,
) -> bytes:
    """Serialise a chunk's outcome in the worker: ``("ok", ChunkResult)`` with every
    exception as an :class:`ExceptionRecord`, or ``("unsendable", at, message)``.

    ``by_value``, if given, is tried first to serialise the outcome (a ``dumps`` that sends
    classes by value, so that the caller gets its own classes back). ``strict`` (a
    ``Pool``'s function says ``standard_pickle_results``): results must pickle with the
    standard pickle, as in ``multiprocessing``; one that does not becomes that call's
    ``ResultEncodingError``. ``shared`` (a worker process on the caller's machine: the
    caller's pid): large result arrays go back through shared memory
    (:mod:`~just_distribute.executors.shm`, loaded only for an outcome that holds arrays).

    A result that cannot be sent back becomes the error of its own call (a
    :class:`~just_distribute.errors.ReceiveError`), so that it costs no other call's result.
    """
    from just_distribute.executors.chunk import CallError, ChunkResult

    def encoded(res: ChunkResult) -> ChunkResult:
        if not res.errors:
            return res
        records = {e.at: encode_exception(e.exc) for e in res.errors}
        values = list(res.values)
        for at, rec in records.items():
            if at < len(values) and isinstance(values[at], BaseException):
                values[at] = rec  # on_error="return": the exception is also the value
        # (A record stands where the exception will be again once rebuilt.)
        errors = [CallError(e.at, records[e.at], e.tb)  # type: ignore[arg-type]
                  for e in res.errors]
        return ChunkResult(values, errors, res.worker, res.started, res.ended)

    if by_value is not None:
        if strict:
            result = _refuse_code_results(result, stop_on_error)
        try:
            return bytes(by_value(("ok", encoded(result))))
        except Exception:
            pass
    if shared is not None:
        try:  # the C pickle: what a strict Pool asks for, too
            buffers: list[pickle.PickleBuffer] = []
            plain = pickle.dumps(("ok", encoded(result)), 5, buffer_callback=buffers.append)
            if not buffers:  # no array in it: the stream is the whole message
                return plain
            from just_distribute.executors import shm

            return shm.dumps(("ok", encoded(result)), hand_over=True, owner=shared)
        except Exception:
            pass
    try:
        if strict:
            return pickle.dumps(("ok", encoded(result)), PROTOCOL)
        return dumps(("ok", encoded(result)))
    except Exception:
        pass
    # Only here, on a result that cannot be sent: the error classes (and the
    # multiprocessing.pool they extend) are no part of a worker's start-up.
    from just_distribute.errors import ReceiveError, ResultEncodingError

    errors = list(result.errors)
    failed = {e.at for e in errors}
    values = list(result.values)
    for i, value in enumerate(values):
        if i in failed:
            continue
        if strict:
            try:
                pickle.dumps(value, PROTOCOL)
            except Exception as exc:
                values[i] = ResultEncodingError(exc, value)
                errors.append(CallError(i, values[i], None))
                continue
        if not _sendable(value):
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
        return dumps(("ok", encoded(patched)))
    except Exception as exc:
        return pickle.dumps(
            ("unsendable", None, f"a result cannot be sent back to the caller: "
             f"{type(exc).__name__}: {exc}. Return plain data (numbers, strings, lists, dicts, "
             f"arrays) instead of objects bound to this process (files, locks, sockets).")
        )


def _refuse_code_results(result: ChunkResult, stop_on_error: bool) -> ChunkResult:
    """A ``Pool``'s results where classes travel by value (the cluster): instances of the
    caller's own classes come back, but a function or method that the standard pickle
    refuses is that call's ``ResultEncodingError``, as in ``multiprocessing``."""
    from just_distribute.errors import ResultEncodingError
    from just_distribute.executors.chunk import CallError, ChunkResult

    code = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.CodeType)
    failed = {e.at for e in result.errors}
    values = list(result.values)
    errors = list(result.errors)
    for i, value in enumerate(values):
        if i in failed or not isinstance(value, code):
            continue
        try:
            pickle.dumps(value, PROTOCOL)
        except Exception as exc:
            values[i] = ResultEncodingError(exc, value)
            errors.append(CallError(i, values[i], None))
    if len(errors) == len(result.errors):
        return result
    errors.sort(key=lambda e: e.at)
    if stop_on_error:  # the caller acts on the first error only
        values, errors = values[: errors[0].at], errors[:1]
    return ChunkResult(values, errors, result.worker, result.started, result.ended)


def _why(value: Any) -> str:
    try:
        dumps(value)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "?"


def rebuild_outcome(result: ChunkResult) -> ChunkResult:
    """In the caller: turn the records of :func:`pack_outcome` back into exceptions."""
    if not result.errors:
        return result
    from just_distribute.executors.chunk import CallError, ChunkResult

    errors = []
    values = result.values
    for err in result.errors:
        exc = err.exc
        if isinstance(exc, ExceptionRecord):
            exc = rebuild_exception(exc)
            if err.at < len(values) and isinstance(values[err.at], ExceptionRecord):
                values[err.at] = exc
        errors.append(CallError(err.at, exc, err.tb))
    return ChunkResult(values, errors, result.worker, result.started, result.ended)
