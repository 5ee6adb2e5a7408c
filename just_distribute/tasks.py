"""``compute_this``: the lazy single call.

>>> from just_distribute import compute_this
>>> @compute_this(job="serial")
... def square(x):
...     return x * x
>>> call = square(3)           # checked against the signature; nothing runs yet
>>> call.run()
9

Calling the decorated function checks the arguments against its signature and returns a
:class:`LazyCall`; nothing is sent until ``.run()`` (alias ``.compute()``) or ``.submit()``.
The call runs as one plain call ``fn(*args, **kwargs)`` (nothing is distributed), on the
cluster job by default: ``address=``, else ``JUST_DISTRIBUTE_ADDRESS``, else the embedded
local cluster. It travels through :meth:`Distributed.submit`, so every job works.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import inspect
import reprlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, overload

from typing_extensions import ParamSpec, Unpack

from just_distribute.decorator import Distributed, DistributeOptions
from just_distribute.errors import CallTimeoutError

__all__ = ["LazyCall", "LazyFunction", "compute_this"]

P = ParamSpec("P")
R = TypeVar("R")

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40


class LazyCall(Generic[R]):
    """One checked call of a :class:`LazyFunction`, not yet run."""

    def __init__(
        self, owner: LazyFunction[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._owner = owner
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [_short.repr(a) for a in self.args]
        parts += [f"{k}={_short.repr(v)}" for k, v in self.kwargs.items()]
        return f"<LazyCall {self._owner._name}({', '.join(parts)})>"

    def submit(self) -> Future[R]:
        """Send the call to its job now; return its future at once.

        The future has ``result(timeout)``, ``exception()``, ``done()`` and
        ``add_done_callback``. An exception raised by the function comes back as itself,
        with the remote traceback as ``__cause__``.
        """
        return self._owner._distributed.submit(*self.args, **self.kwargs)

    def run(self, timeout: float | None = None) -> R:
        """Run the call and return its result.

        Args:
            timeout: seconds to wait for the result (None: as long as it takes).

        Raises:
            CallTimeoutError: no result within ``timeout`` (a ``TimeoutError``). A call that
                already runs on a dask worker cannot be stopped there; its result is dropped.
            ClusterUnreachableError: the cluster at ``address`` did not answer.
            Exception: whatever the function raised, with the remote traceback as cause.
        """
        future = self.submit()
        try:
            return future.result(timeout)
        except cf.TimeoutError:
            future.cancel()
            raise CallTimeoutError(
                f"{self!r} gave no result within timeout={timeout}s"
            ) from None

    def compute(self, timeout: float | None = None) -> R:
        """The same as :meth:`run` (the dask spelling)."""
        return self.run(timeout)


class LazyFunction(Generic[P, R]):
    """A function made lazy by :func:`compute_this`: calling it returns a :class:`LazyCall`."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.__wrapped__: Callable[P, R] = fn
        self._distributed: Distributed[P, R] = Distributed(fn, options)
        self._signature = inspect.signature(fn)
        self._name: str = getattr(fn, "__name__", "function")

    def __repr__(self) -> str:
        return f"<compute_this {self._name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> LazyCall[R]:
        """Check the arguments against the signature and return the call, not yet run.

        Raises:
            TypeError: the arguments do not fit the signature (nothing is sent).
        """
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._name}(): {exc}") from None
        return LazyCall(self, tuple(args), dict(kwargs))

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Pickled, it is its original function, as a distributed function is.
        return self._distributed.__reduce__()


@overload
def compute_this(fn: Callable[P, R], /) -> LazyFunction[P, R]: ...


@overload
def compute_this(
    fn: None = None, /, **options: Unpack[DistributeOptions]
) -> Callable[[Callable[P, R]], LazyFunction[P, R]]: ...


def compute_this(
    fn: Callable[P, R] | None = None, /, **options: Unpack[DistributeOptions]
) -> LazyFunction[P, R] | Callable[[Callable[P, R]], LazyFunction[P, R]]:
    """Make a function lazy: ``f(args)`` returns a call that ``.run()`` sends to the cluster.

    Usable bare (``@compute_this``), with options (``@compute_this(job=..., address=...)``)
    or on a lambda (``compute_this(lambda x: x + 1)``).

    Args:
        fn: the function, when used bare or on a lambda.
        **options: the options of :func:`~just_distribute.distribute`; ``job`` defaults to
            ``"cluster"`` (``address=``, else ``JUST_DISTRIBUTE_ADDRESS``, else an embedded
            local cluster); ``tls=`` for a TLS service.

    Returns:
        A :class:`LazyFunction` (or, with options only, a decorator making one).

    Example:
        >>> @compute_this(job="io")
        ... def add(x, y):
        ...     return x + y
        >>> add(2, 3).run()
        5
    """
    settings: dict[str, Any] = {"job": "cluster", **options}
    if fn is not None:
        if not callable(fn):
            raise TypeError(
                f"compute_this() takes a function, got {type(fn).__name__}; use "
                f"@compute_this, @compute_this(job=..., address=...) or compute_this(lambda ...)"
            )
        return LazyFunction(fn, settings)
    Distributed(lambda: None, settings)  # a bad option fails here, at decoration

    def wrap(f: Callable[P, R]) -> LazyFunction[P, R]:
        return LazyFunction(f, settings)

    return wrap
