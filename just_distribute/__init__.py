"""just_distribute: make an ordinary Python function parallel with one decorator.

>>> from just_distribute import distribute
>>> @distribute(job="io", workers=4)
... def double(x: int) -> int:
...     return 2 * x
>>> double([1, 2, 3])
[2, 4, 6]
"""

from ._version import __version__
from .config import Options, config
from .decorator import Distributed, DistributeOptions, RunResult, distribute
from .errors import (
    CallTimeoutError,
    ClusterUnreachableError,
    JustDistributeError,
    MissingExtraError,
    ReceiveError,
    RemoteTraceback,
    SendError,
    WorkerLostError,
)
from .executors import Executor, register_executor
from .pool import Pool
from .report import RunReport, WorkerStats
from .tasks import LazyCall, LazyFunction, compute_this

__all__ = [
    "CallTimeoutError",
    "ClusterUnreachableError",
    "DistributeOptions",
    "Distributed",
    "Executor",
    "JustDistributeError",
    "LazyCall",
    "LazyFunction",
    "MissingExtraError",
    "Options",
    "Pool",
    "ReceiveError",
    "RemoteTraceback",
    "RunReport",
    "RunResult",
    "SendError",
    "WorkerLostError",
    "WorkerStats",
    "__version__",
    "compute_this",
    "config",
    "distribute",
    "register_executor",
]
