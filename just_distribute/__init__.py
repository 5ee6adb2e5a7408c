"""just_distribute: make an ordinary Python function parallel with one decorator.

>>> from just_distribute import distribute
>>> @distribute(job="io", workers=4)
... def double(x: int) -> int:
...     return 2 * x
>>> double([1, 2, 3])
[2, 4, 6]

The public names load their module on first use (as ``concurrent.futures`` does), so a
worker process that only runs chunks imports none of the front-ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from just_distribute._lazy import lazy_names
from just_distribute._version import __version__

# Eager, and light (the standard library only): the function ``config`` shares its name
# with its module, which would otherwise replace it here once anything imports the module.
from just_distribute.config import Options, config

if TYPE_CHECKING:
    from just_distribute.decorator import Distributed, DistributeOptions, RunResult, distribute
    from just_distribute.errors import (
        CallTimeoutError,
        ClusterUnreachableError,
        InitializerError,
        JustDistributeError,
        MissingExtraError,
        PoolTerminatedError,
        ReceiveError,
        RemoteTraceback,
        ResultEncodingError,
        SendError,
        StandInError,
        VersionMismatchError,
        WorkerLostError,
    )
    from just_distribute.executors import Executor, register_executor
    from just_distribute.executors.base import ChunkFuture, Task
    from just_distribute.executors.chunk import CallError, ChunkResult
    from just_distribute.executors.cluster_connect import ship
    from just_distribute.pool import AsyncResult, Pool
    from just_distribute.report import RunReport, WorkerStats
    from just_distribute.tasks import LazyCall, LazyFunction, compute_this
    from just_distribute.updates import Update, update

# A library logs, the application decides where it goes: without this, Python's
# last-resort handler would print our warnings (retries, timeouts) to stderr.
logging.getLogger("just_distribute").addHandler(logging.NullHandler())

_WHERE = {
    "Distributed": "decorator", "DistributeOptions": "decorator", "RunResult": "decorator",
    "distribute": "decorator",
    "CallTimeoutError": "errors", "ClusterUnreachableError": "errors",
    "InitializerError": "errors", "JustDistributeError": "errors",
    "MissingExtraError": "errors", "PoolTerminatedError": "errors", "ReceiveError": "errors",
    "RemoteTraceback": "errors", "ResultEncodingError": "errors", "SendError": "errors",
    "StandInError": "errors",
    "WorkerLostError": "errors", "VersionMismatchError": "errors",
    "Executor": "executors", "register_executor": "executors",
    "ChunkFuture": "executors.base", "Task": "executors.base",
    "CallError": "executors.chunk", "ChunkResult": "executors.chunk",
    "ship": "executors.cluster_connect",
    "AsyncResult": "pool", "Pool": "pool",
    "RunReport": "report", "WorkerStats": "report",
    "LazyCall": "tasks", "LazyFunction": "tasks", "compute_this": "tasks",
    "Update": "updates", "update": "updates",
}

__all__ = [
    "Options",
    "config",
    "AsyncResult",
    "CallError",
    "CallTimeoutError",
    "ChunkFuture",
    "ChunkResult",
    "ClusterUnreachableError",
    "DistributeOptions",
    "Distributed",
    "Executor",
    "InitializerError",
    "JustDistributeError",
    "LazyCall",
    "LazyFunction",
    "MissingExtraError",
    "Pool",
    "PoolTerminatedError",
    "ReceiveError",
    "RemoteTraceback",
    "ResultEncodingError",
    "RunReport",
    "RunResult",
    "SendError",
    "StandInError",
    "Task",
    "Update",
    "VersionMismatchError",
    "WorkerLostError",
    "WorkerStats",
    "__version__",
    "compute_this",
    "distribute",
    "register_executor",
    "ship",
    "update",
]


__getattr__ = lazy_names(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
