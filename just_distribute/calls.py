"""Caller-side call adapters: what wraps the user's function before it travels.

- :class:`BlockingCall` lets a thread or process call an ``async def`` function plainly.
- :class:`OneCall` / :class:`AsyncOneCall` turn ``fn(*args, **kwargs)`` into a one-column
  call, so that a single call runs as a chunk (``submit``).
- :class:`Initialized` runs an ``initializer`` once in each worker process before its first
  call, where the executor does not run initializers natively (see
  ``Executor.native_initializer``). Used by the decorator and by ``Pool`` alike.

These objects are unpickled in worker processes: this module imports the standard
library only (``web`` lazily, for ``async def`` functions).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import types
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from just_distribute.executors.base import is_async

if TYPE_CHECKING:
    from just_distribute.executors.base import Executor

__all__ = [
    "AsyncOneCall", "BlockingCall", "Initialized", "OneCall", "adapt", "initializer_key",
]

_initialized: set[str] = set()
_namespaces: dict[str, dict[str, Any]] = {}
_init_lock = threading.Lock()


def _movable(fn: Any, namespace: dict[str, Any]) -> bool:
    main = sys.modules.get("__main__")
    return (
        isinstance(fn, types.FunctionType)
        and fn.__module__ == "__main__"
        and not (main is not None and fn.__globals__ is vars(main))  # the real one: leave it
        and fn.__globals__ is not namespace
    )


def _in_namespace(fn: Any, namespace: dict[str, Any]) -> Any:
    """``fn`` with ``namespace`` as its globals, if it is a ``__main__`` function sent by value.

    Such functions arrive in a worker each with a private copy of the globals they use, so
    a global set by the initializer would be invisible to the function. Giving them one
    namespace per pool and process (the functions they call too) makes
    ``global model; model = load()`` in an initializer work as with ``multiprocessing``.
    """
    if not _movable(fn, namespace):
        return fn
    moved = types.FunctionType(
        fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
    )
    moved.__kwdefaults__ = fn.__kwdefaults__
    moved.__dict__.update(fn.__dict__)
    for name, value in fn.__globals__.items():
        if name not in namespace:
            namespace[name] = value  # first, so that functions calling each other end
            namespace[name] = _in_namespace(value, namespace)
    return moved


_keys: dict[Any, str] = {}


def initializer_key(initializer: Callable[..., object], initargs: tuple[Any, ...]) -> str:
    """One name per ``(initializer, initargs)`` in this process: it runs once per worker
    however many functions (or bound methods, or copies with other options) use it."""
    try:
        return _keys.setdefault((initializer, initargs), uuid.uuid4().hex)
    except TypeError:  # unhashable initargs: their repr names them well enough here
        return hashlib.blake2b(repr((initializer, initargs)).encode(), digest_size=16).hexdigest()


class Initialized:
    """``fn`` that first runs the pool's initializer, once in each process it runs in.

    For jobs whose workers are processes (compute, cluster) and a user's own executor.
    """

    def __init__(
        self, fn: Callable[..., Any], initializer: Callable[..., object],
        initargs: tuple[Any, ...], key: str | None = None,
    ) -> None:
        self.fn = fn
        self.initializer = initializer
        self.initargs = initargs
        self.key = key if key is not None else initializer_key(initializer, initargs)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_bound"}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = self.__dict__.get("_bound")
        if bound is None:
            with _init_lock:
                namespace = _namespaces.setdefault(self.key, {})
                if self.key not in _initialized:
                    try:
                        _in_namespace(self.initializer, namespace)(*self.initargs)
                    except Exception as exc:
                        exc.add_note(
                            "just_distribute: raised by the initializer, which runs "
                            "once in each worker before its first call"
                        )
                        raise
                    _initialized.add(self.key)
                bound = self._bound = _in_namespace(self.fn, namespace)
        return bound(*args, **kwargs)


class BlockingCall:
    """Wraps an ``async def`` function so that a thread or process can call it plainly."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        from just_distribute.web import run_with_scope

        coro = run_with_scope(self.fn, args, kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # This thread already runs a loop (a notebook, a nested call): use a fresh thread.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as helper:
            return helper.submit(asyncio.run, coro).result()


class OneCall:
    """``fn(*args, **kwargs)`` as a one-column call, to run a single plain call as a chunk."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self, _unused: object) -> Any:
        return self.fn(*self.args, **self.kwargs)


class AsyncOneCall(OneCall):
    """:class:`OneCall` for an ``async def`` function, awaited by the web job's consumers."""

    async def __call__(self, _unused: object) -> Any:
        return await self.fn(*self.args, **self.kwargs)


def adapt(
    fn: Callable[..., Any],
    executor: Executor,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    native: bool,
) -> Callable[..., Any]:
    """``fn`` as ``executor`` can run it: an ``async def`` function made blocking where the
    executor does not await coroutines, and the initializer added where the executor does
    not run it itself (``native``)."""
    if is_async(fn) and not executor.awaits_coroutines:
        fn = BlockingCall(fn)
    if initializer is not None and not native:
        fn = Initialized(fn, initializer, initargs)
    return fn
