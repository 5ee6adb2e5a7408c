"""The exception types of just_distribute.

An exception raised *inside* the user's function reaches the caller as itself (same type,
same arguments), with the worker's traceback as ``__cause__`` and a note naming the failed
call. The classes below are for failures of just_distribute's own machinery: one class per
cause, each message saying what to do about it::

    Exception
     +-- RemoteTraceback            the worker's traceback, attached as __cause__ (the
     |                              class of multiprocessing.pool, so code written for
     |                              multiprocessing recognises it)
     +-- JustDistributeError        every failure of the machinery itself
          +-- WorkerLostError       a worker process died running a call (exit code, reason)
          +-- SendError (TypeError) a function or argument could not be sent to a worker
          +-- ReceiveError          a result could not be sent back or rebuilt here
          |    +-- ResultEncodingError (multiprocessing.pool.MaybeEncodingError)
          |                         Pool: a result the standard pickle cannot send
          +-- CallTimeoutError (TimeoutError)          a call ran past ``timeout=``
          +-- ClusterUnreachableError (ConnectionError) the dask scheduler did not answer
          +-- VersionMismatchError  client and cluster workers differ in Python or pickle libs
          +-- MissingExtraError (ImportError)          an optional dependency is missing
          +-- InitializerError      ``initializer=`` raised in a worker before its first call
          +-- PoolTerminatedError   the Pool was terminated before the call finished
          +-- StandInError (RuntimeError) a worker's exception whose class is missing here
"""

from __future__ import annotations

import multiprocessing.pool
import signal
from typing import TYPE_CHECKING

__all__ = [
    "CallTimeoutError",
    "ClusterUnreachableError",
    "InitializerError",
    "JustDistributeError",
    "MissingExtraError",
    "PoolTerminatedError",
    "ReceiveError",
    "RemoteTraceback",
    "ResultEncodingError",
    "SendError",
    "StandInError",
    "VersionMismatchError",
    "WorkerLostError",
]


class JustDistributeError(Exception):
    """Base class of every error raised by just_distribute's own machinery."""


if TYPE_CHECKING:  # the standard library's stubs do not declare these two classes

    class RemoteTraceback(Exception):
        """The traceback of an exception raised in another process."""

        tb: str

        def __init__(self, tb: str) -> None: ...

    _MaybeEncodingError = Exception
else:
    #: The traceback of an exception raised in another process, attached as ``__cause__``:
    #: ``multiprocessing.pool.RemoteTraceback`` itself, its ``tb`` the text set off by quotes.
    RemoteTraceback = multiprocessing.pool.RemoteTraceback
    _MaybeEncodingError = multiprocessing.pool.MaybeEncodingError


def remote_traceback(tb: str) -> BaseException:
    """A :data:`RemoteTraceback` for the traceback text ``tb``, as multiprocessing makes it."""
    return RemoteTraceback(f'\n"""\n{tb}"""')


class WorkerLostError(JustDistributeError):
    """A worker process died while it was running a call.

    Attributes:
        exitcode: the worker's exit code; negative numbers are the signal that ended it.
        pid: the worker's process id, when known.
    """

    def __init__(self, message: str, exitcode: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.pid = pid

    @staticmethod
    def describe_exit(exitcode: int | None) -> str:
        """Say in words why a process with this exit code most likely ended."""
        if exitcode is None:
            return "it vanished without an exit code"
        if exitcode < 0:
            try:
                name = signal.Signals(-exitcode).name
            except ValueError:
                name = f"signal {-exitcode}"
            hints = {
                "SIGKILL": "killed: out of memory (the kernel's OOM killer) or killed by hand",
                "SIGSEGV": "crashed in native code (a C extension or ctypes)",
                "SIGABRT": "aborted by native code",
                "SIGTERM": "terminated from outside",
                "SIGBUS": "crashed in native code (bus error)",
            }
            return f"it was ended by {name}: {hints.get(name, 'a signal from outside or below')}"
        return f"it exited with code {exitcode} (os._exit() or sys.exit() inside the function?)"


class SendError(JustDistributeError, TypeError):
    """A function or an argument could not be serialised to be sent to a worker.

    Attributes:
        at: for an argument, the position in its chunk of the call it belongs to.
    """

    at: int | None = None


class ReceiveError(JustDistributeError):
    """A result could not be serialised in the worker or rebuilt in the caller."""


class ResultEncodingError(ReceiveError, _MaybeEncodingError):
    """A ``Pool`` call's result could not be pickled to be sent back.

    As ``multiprocessing.pool.MaybeEncodingError`` (which it is): ``exc`` and ``value`` are
    the ``repr`` of the pickling error and of the result. The pool goes on working.
    """

    def __init__(self, exc: object, value: object) -> None:
        # Rebuilt from its args after travelling: they are the reprs already.
        self.exc = exc if isinstance(exc, str) else repr(exc)
        self.value = value if isinstance(value, str) else repr(value)
        Exception.__init__(self, self.exc, self.value)

    def __str__(self) -> str:
        return (
            f"the result of this call ({self.value}) cannot be pickled to be sent back: "
            f"{self.exc}. Return plain data (numbers, strings, lists, dicts, arrays) instead "
            f"of functions or objects bound to the worker process"
        )


class CallTimeoutError(JustDistributeError, TimeoutError):
    """A call ran longer than the ``timeout=`` it was given."""


class ClusterUnreachableError(JustDistributeError, ConnectionError):
    """The dask scheduler at the given address did not answer in time."""


class VersionMismatchError(JustDistributeError):
    """The workers of a cluster run other versions of Python, just_distribute, dill or
    cloudpickle than the caller: what one side pickles, the other might not load."""


class MissingExtraError(JustDistributeError, ImportError):
    """An optional dependency of the chosen job is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional package {module!r}, which is not installed. "
            f'Fix: pip install "just-distribute[{extra}]"'
        )
        self.extra = extra
        self.module = module


class InitializerError(JustDistributeError):
    """The ``initializer`` raised in a worker process before its first call.

    The worker's traceback is in the message; the next call starts a fresh worker and
    tries the initializer again.
    """


class PoolTerminatedError(JustDistributeError):
    """The :class:`~just_distribute.Pool` was terminated before this call finished."""


class StandInError(JustDistributeError, RuntimeError):
    """Stands for an exception raised in a worker whose class cannot be rebuilt here.

    Raised only when the caller has no such class (a module installed on the workers
    alone) and the worker's copy cannot be unpickled either; the message starts with the
    original class name and text.

    Attributes:
        module: the module of the original class.
        qualname: its qualified name.
    """

    def __init__(self, message: str, module: str = "", qualname: str = "") -> None:
        super().__init__(message)
        self.module = module
        self.qualname = qualname
