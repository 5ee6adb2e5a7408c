"""Say *which* object stops a function or an argument from being sent, and why.

Called only after serialisation has failed, to turn "cannot pickle 'generator' object"
into "its keyword constant 'rows' (a generator) cannot be pickled".
"""

from __future__ import annotations

import functools
import threading
import types
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from just_distribute.errors import SendError
from just_distribute.executors import shm as _shm
from just_distribute.executors import wire as _wire

__all__ = ["dumps_columns", "explain_columns", "explain_function", "shared_payload"]


def _why(value: Any) -> str | None:
    """None if ``value`` can be sent; else the reason it cannot."""
    try:
        _wire.dumps(value)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _parts(fn: Any) -> Iterator[tuple[str, Any]]:
    """The named things a function carries with it, outermost first."""
    if isinstance(fn, functools.partial):
        for name, value in fn.keywords.items():
            yield f"keyword constant {name!r}", value
        for i, value in enumerate(fn.args):
            yield f"bound argument {i}", value
        yield from _parts(fn.func)
        return
    if isinstance(fn, types.MethodType):
        yield "instance (self)", fn.__self__
        yield from _parts(fn.__func__)
        return
    inner = getattr(fn, "fn", None)  # the call wrappers of _chunk
    if not isinstance(fn, types.FunctionType) and callable(inner):
        yield from _parts(inner)
        return
    if not isinstance(fn, types.FunctionType):
        return
    code = fn.__code__
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            yield f"captured variable {name!r}", cell.cell_contents
        except ValueError:
            continue
    for i, value in enumerate(fn.__defaults__ or ()):
        yield f"default value {i}", value
    for name in sorted(code.co_names):
        if name in fn.__globals__ and not isinstance(fn.__globals__[name], types.ModuleType):
            yield f"global {name!r}", fn.__globals__[name]


def explain_function(fn: Any) -> str | None:
    """Name the first object carried by ``fn`` that cannot be sent, with the reason."""
    for where, value in _parts(fn):
        reason = _why(value)
        if reason is not None:
            return f"its {where} ({type(value).__name__}) cannot be sent: {reason}"
    return None


def explain_columns(columns: Sequence[Sequence[Any]]) -> tuple[int, int, str] | None:
    """``(row, column, reason)`` of the first argument that cannot be sent, if found."""
    for c, column in enumerate(columns):
        for row, value in enumerate(column):
            reason = _why(value)
            if reason is not None:
                return row, c, f"({type(value).__name__}) cannot be sent: {reason}"
    return None


def dumps_columns(
    columns: Sequence[Sequence[Any]], name: str, where: str, shared: bool = False
) -> bytes:
    """The chunk's arguments as bytes, for every executor that sends them elsewhere.

    Args:
        columns: the chunk's columns.
        name: the function's name, for the message.
        where: where they were to go ("a worker process", "the cluster").
        shared: large arrays go through shared memory (a worker process on this machine);
            the segment goes when the returned bytes are dropped.

    Raises:
        SendError: an argument cannot be serialised; ``at`` names its call in the chunk, so
            that the engine's note names the failed call on every job.
    """
    try:
        return _wire.dumps(columns, shared=shared)
    except Exception as exc:
        found = explain_columns(columns)
        why = f"{type(exc).__name__}: {exc}"
        if found is not None:
            why = f"positional argument {found[1] + 1} {found[2]}"
        err = SendError(
            f"cannot send the arguments of {name}() to {where}: {why}. Pass plain data "
            f"(numbers, strings, lists, arrays) and create process-bound objects (locks, "
            f'files, connections) inside the function, or use job="io" (threads), which '
            f"sends nothing."
        )
        err.at = found[0] if found is not None else None
        raise err from exc


_payloads: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_payloads_lock = threading.Lock()


def shared_payload(payload: Any, scope: Any = None) -> bytes:
    """A run's function as sent to worker processes on this machine: its large keyword
    constants in one shared-memory segment that every worker maps (shared once, not copied
    per worker), unlinked when the run's ``scope``
    (:class:`~just_distribute.executors.base.RunScope`) closes; the workers that mapped it
    keep their map. ``payload.serialized()`` itself when nothing in it is large.

    Raises:
        SendError: the function or a constant cannot be sent (from ``serialized()``).
    """
    plain: bytes = payload.serialized()
    if len(plain) < _shm.MIN_BYTES:
        return plain
    with _payloads_lock:
        cached = _payloads.get(payload)
        if cached is None:
            try:
                cached = _wire.dumps_function(payload.fn, shared=True)
            except Exception:
                cached = plain
            # Kept for the whole run: a worker started late maps the same segment.
            _payloads[payload] = cached
            if isinstance(cached, _shm.Shared) and scope is not None:
                scope.on_close(functools.partial(_release_payload, payload, cached))
        return cached


def _release_payload(payload: Any, message: _shm.Shared) -> None:
    with _payloads_lock:
        _payloads.pop(payload, None)
    message.release()
