"""Durable progress for ``checkpoint="some/dir"``: finished chunks recorded, reused on a rerun.

Layout: ``<dir>/<function name>-<function key>/<chunk key>.rec``, one file per finished
chunk, in the caller's file system (the records never travel to workers).

- The *function key* covers the function's code: its bytecode and constants (nested
  functions and lambdas included), defaults, closure values, the keyword constants of the
  run, and, one module deep, the code of the functions and the values of the plain globals
  it uses. Change any of them and no earlier record is found. (A value that cannot be
  pickled, such as a lock or a session, counts by its type only.)
- The *chunk key* is a hash of the chunk's pickled input columns, so a record is reused
  only for exactly the same inputs of exactly the same calls. Changed inputs miss; the
  chunks whose inputs did not change are still reused.
- A record is written atomically (a temporary file, ``fsync``, ``os.replace``): a run
  killed at any moment leaves whole records or none, never half a record.

A record holds the chunk's results and, if its calls published any, their
:func:`~just_distribute.update` records, so a resumed run still reports them.

Chunk boundaries must be the same on the rerun for lookups to hit; the engine sees to that
by choosing a fixed chunk size whenever a checkpoint is used (see ``engine._Sizer``).
Chunks holding an exception as a result (``on_error="return"``) are not recorded, so a
rerun tries those calls again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import re
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from just_distribute.executors import wire as _wire
from just_distribute.planning import Plan
from just_distribute.updates import Update

__all__ = ["FileCheckpoint", "fingerprint", "open_checkpoint"]

log = logging.getLogger("just_distribute")

_FORMAT = 1
_SUFFIX = ".rec"
_MAX_GLOBAL_BYTES = 1 << 20  # larger globals are keyed by type and size, not content


def _code_bytes(code: types.CodeType, out: list[bytes]) -> None:
    out += [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_bytes(const, out)
        elif isinstance(const, frozenset):  # set order changes with the hash seed
            out.append(repr(sorted(map(repr, const))).encode())
        else:
            out.append(repr(const).encode())


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _value_bytes(value: Any) -> bytes:
    """Bytes standing for a value: its pickle, or for what cannot be pickled, its type."""
    try:
        data = _wire.dumps(value)
    except Exception:
        return f"unpicklable:{type(value).__module__}.{type(value).__qualname__}".encode()
    if len(data) > _MAX_GLOBAL_BYTES:
        return hashlib.sha256(data).digest()
    return data


def fingerprint(fn: Any, _seen: set[int] | None = None, _depth: int = 0) -> bytes:
    """A digest of what decides a function's results: its code, constants and closure.

    Args:
        fn: a function, a ``functools.partial`` (its keyword constants count), a decorated
            function (its original counts), or any callable (its pickle counts).

    Returns:
        32 bytes (SHA-256).
    """
    seen = set() if _seen is None else _seen
    h = hashlib.sha256()
    if id(fn) in seen:
        return h.digest()
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        h.update(fingerprint(fn.func, seen, _depth))
        h.update(_value_bytes(fn.args))
        h.update(_value_bytes(sorted(fn.keywords.items())))
        return h.digest()
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None and not isinstance(fn, types.FunctionType):
        return fingerprint(wrapped, seen, _depth)
    if isinstance(fn, types.MethodType):
        h.update(fingerprint(fn.__func__, seen, _depth))
        h.update(_value_bytes(fn.__self__))
        return h.digest()
    if not isinstance(fn, types.FunctionType):
        inner = getattr(fn, "fn", None)  # the wrappers of _chunk (BlockingCall, OneCall)
        if inner is not None and callable(inner):
            return fingerprint(inner, seen, _depth)
        h.update(_value_bytes(fn))
        return h.digest()
    parts: list[bytes] = [f"{fn.__module__}.{fn.__qualname__}".encode()]
    _code_bytes(fn.__code__, parts)
    parts.append(_value_bytes(fn.__defaults__))
    parts.append(_value_bytes(fn.__kwdefaults__))
    for cell in fn.__closure__ or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        parts.append(
            fingerprint(content, seen, _depth + 1) if callable(content) else _value_bytes(content)
        )
    if _depth < 2:
        # What the function uses from its module: helpers' code, settings' values.
        for name in sorted(_global_names(fn.__code__)):
            if name not in fn.__globals__:
                continue
            value = fn.__globals__[name]
            if isinstance(value, types.ModuleType | type):
                continue
            if callable(value):
                if getattr(value, "__module__", None) == fn.__module__:
                    parts.append(name.encode() + fingerprint(value, seen, _depth + 1))
                continue
            parts.append(name.encode() + _value_bytes(value))
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.digest()


class FileCheckpoint:
    """The records of one function (with its constants) in one directory.

    Implements the engine's ``Checkpoint`` protocol: :meth:`lookup` and :meth:`store`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._warned = False
        for stale in self.directory.glob(".tmp-*"):  # left by a run killed mid-write
            with contextlib.suppress(OSError):
                stale.unlink()

    def _key(self, columns: Sequence[Sequence[Any]]) -> str | None:
        try:
            data = _wire.dumps([list(c) if isinstance(c, range) else c for c in columns])
        except Exception as exc:
            self._warn(f"its inputs cannot be pickled ({type(exc).__name__}: {exc})")
            return None
        return hashlib.sha256(data).hexdigest()[:40]

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("checkpoint %s: a chunk is not recorded: %s", self.directory, why)

    def lookup(
        self, start: int, columns: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], list[Any]] | None:
        """The recorded results of the calls in ``columns`` (starting at ``start``) and the
        :class:`~just_distribute.Update` records of those calls, if recorded."""
        key = self._key(columns)
        if key is None:
            return None
        path = self.directory / f"{key}{_SUFFIX}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            fmt, values, *rest = _wire.loads(data)
        except Exception as exc:
            log.warning("checkpoint record %s is unreadable (%s); running it again", path, exc)
            return None
        n = len(columns[0]) if columns else 0
        if fmt != _FORMAT or not isinstance(values, list) or len(values) != n:
            return None
        log.debug("checkpoint: calls %d-%d reused from %s", start, start + n - 1, path.name)
        updates = rest[0] if rest and isinstance(rest[0], list) else []  # older records: none
        return values, [dataclasses.replace(u, index=start + u.index) for u in updates]

    def store(
        self,
        start: int,
        columns: Sequence[Sequence[Any]],
        values: list[Any],
        updates: Sequence[Update] = (),
    ) -> None:
        """Record the results of a finished chunk and its calls' updates, atomically."""
        if any(isinstance(v, BaseException) for v in values):
            return  # failed calls are tried again on the next run
        key = self._key(columns)
        if key is None:
            return
        try:
            # Relative to the chunk: the same inputs may sit elsewhere in the next run.
            relative = [dataclasses.replace(u, index=u.index - start) for u in updates]
            # Without updates the record keeps its original two fields.
            data = _wire.dumps((_FORMAT, values, relative) if relative else (_FORMAT, values))
        except Exception as exc:
            self._warn(f"its results cannot be pickled ({type(exc).__name__}: {exc})")
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / f"{key}{_SUFFIX}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob(f"*{_SUFFIX}"))


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, or a power cut could forget the record.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_checkpoint(
    path: str | os.PathLike[str], fn: Callable[..., Any], plan: Plan
) -> FileCheckpoint:
    """Open the records of ``fn`` run with ``plan``'s keyword constants under ``path``.

    Args:
        path: the checkpoint directory (created if missing).
        fn: the user's function.
        plan: the run's plan; ``plan.fn`` carries the keyword constants.

    Returns:
        The records, to pass to the engine.
    """
    digest = hashlib.sha256(fingerprint(fn) + fingerprint(plan.fn)).hexdigest()[:24]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", plan.name)[:60] or "function"
    return FileCheckpoint(Path(path) / f"{name}-{digest}")
