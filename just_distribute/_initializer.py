"""Running an ``initializer`` once in each worker process, before its first call.

Used where workers are processes (compute, cluster), by the decorator and by ``Pool``
alike: every call is wrapped in :class:`Initialized`, which runs the initializer the first
time it runs in a process. The jobs whose workers are threads (io, web) run initializers
natively, through their thread pools.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

__all__ = ["NATIVE_INITIALIZER", "Initialized"]

#: Jobs whose executors run ``initializer`` themselves, once per worker thread.
NATIVE_INITIALIZER = frozenset({"io", "web"})

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


class Initialized:
    """``fn`` that first runs the pool's initializer, once in each process it runs in.

    For jobs whose workers are processes (compute, cluster) and a user's own executor.
    """

    def __init__(
        self, fn: Callable[..., Any], initializer: Callable[..., object],
        initargs: tuple[Any, ...], key: str,
    ) -> None:
        self.fn = fn
        self.initializer = initializer
        self.initargs = initargs
        self.key = key

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
