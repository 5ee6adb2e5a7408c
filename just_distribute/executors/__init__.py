"""The registry: job name or alias → executor; cached instances; ``register_executor``.

Backends are imported only when a job asks for them, so a missing optional dependency
costs nothing until it is needed, and then fails with the ``pip install`` line that fixes
it.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from just_distribute.config import Options, usable_cpus
from just_distribute.executors.base import ChunkFuture, Executor, Payload, RunScope, Task

__all__ = [
    "ChunkFuture",
    "Executor",
    "Payload",
    "RunScope",
    "Task",
    "canonical_job",
    "create_executor",
    "default_workers",
    "executor_for",
    "get_executor",
    "job_names",
    "owned_executor",
    "register_executor",
    "shutdown_all",
]

Factory = Callable[[Options], Executor]

log = logging.getLogger("just_distribute")

_lock = threading.Lock()
_factories: dict[str, Factory | str] = {}
_aliases: dict[str, str] = {}
_default_workers: dict[str, Callable[[], int | None]] = {}
_cache: dict[tuple[Any, ...], Executor] = {}
#: Adapters for objects passed as ``job=`` (e.g. a dask Client), tried in order.
object_adapters: list[Callable[[Any, Options], Executor | None]] = []


def register_executor(
    name: str,
    factory: Factory | str,
    *,
    aliases: tuple[str, ...] = (),
    default_workers: Callable[[], int | None] | None = None,
) -> None:
    """Make ``job=name`` (and its aliases) run on executors made by ``factory``.

    Args:
        name: the job name.
        factory: called with the resolved :class:`~just_distribute.config.Options` (``workers``
            filled in) to make an executor; or ``"module:attribute"`` naming it, imported on
            first use.
        aliases: other names for the same job.
        default_workers: the worker count when none is given (default: usable CPUs).
    """
    with _lock:
        _factories[name] = factory
        _aliases[name] = name
        for alias in aliases:
            _aliases[alias] = name
        if default_workers is not None:
            _default_workers[name] = default_workers


def job_names() -> list[str]:
    """Every job name and alias that ``job=`` accepts."""
    return sorted(_aliases)


def canonical_job(job: str) -> str:
    """The job's registered name.

    Raises:
        ValueError: ``job="ray"`` (not supported: use ``"cluster"``), or an unknown name.
    """
    if not isinstance(job, str):
        raise TypeError(f"job must be a job name or an executor, got {type(job).__name__}")
    key = job.strip().lower()
    if key == "ray":
        raise ValueError(
            'job="ray" is not supported: just_distribute does not use Ray. Use job="cluster" '
            "to run on a dask.distributed cluster (pass address= to reach one beyond this "
            "machine), or a local job: " + ", ".join(repr(n) for n in job_names())
        )
    if key not in _aliases:
        raise ValueError(
            f"unknown job {job!r}; valid jobs are: " + ", ".join(repr(n) for n in job_names())
        )
    return _aliases[key]


def default_workers(name: str) -> int | None:
    """The worker count of job ``name`` when none is given."""
    pick = _default_workers.get(name)
    return pick() if pick is not None else usable_cpus()


def _factory(name: str) -> Factory:
    factory = _factories[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        assert callable(factory)
        _factories[name] = factory
    return factory


def create_executor(options: Options) -> Executor:
    """A new executor for ``options.job`` (not cached: the caller owns and shuts it down)."""
    name = canonical_job(options.job)
    workers = options.workers or default_workers(name)
    made = _factory(name)(options.replace(job=name, workers=workers))
    log.info("job %r: started a pool of %s workers", name, made.workers)
    return made


def get_executor(options: Options) -> Executor:
    """The shared executor for these options, made on first use and reused afterwards."""
    job = options.job
    if isinstance(job, Executor):
        return job
    if not isinstance(job, str):
        for adapt in object_adapters:
            made = adapt(job, options)
            if made is not None:
                return made
        if isinstance(job, cf.Executor):
            key: tuple[Any, ...] = ("futures", id(job))
            with _lock:
                if key not in _cache:
                    from just_distribute.executors.futures import FuturesExecutor

                    _cache[key] = FuturesExecutor(job)
                return _cache[key]
        raise TypeError(
            "job must be a job name (" + ", ".join(repr(n) for n in job_names()) + "), a "
            f"concurrent.futures.Executor or a dask Client; got {type(job).__name__}"
        )
    name = canonical_job(job)
    workers = options.workers or default_workers(name)
    key = (name, workers, options.address, options.initializer, options.initargs, options.tls)
    with _lock:
        existing = _cache.get(key)
        if existing is not None and existing.closed:
            del _cache[key]
            existing = None
    if existing is not None:
        return existing
    made = _factory(name)(options.replace(job=name, workers=workers))
    with _lock:
        kept = _cache.setdefault(key, made)
    if kept is made:
        log.info("job %r: started a shared pool of %s workers", name, made.workers)
    return kept


def executor_for(options: Options) -> tuple[Executor, bool]:
    """The shared executor of a run, and whether it runs ``options.initializer`` itself.

    A call made inside one of the job's own workers gets the serial executor instead (the
    pool is busy with the outer call). Executors that run initializers natively get one
    pool per ``(initializer, initargs)``; the others share one pool, and the front-end wraps
    each call in :class:`~just_distribute.calls.Initialized`. The executor's worker count is
    brought up to date (:meth:`Executor.refresh`).
    """
    plain = options.replace(initializer=None, initargs=())
    ex = get_executor(plain)
    if ex.check_nesting():
        ex = get_executor(plain.replace(job="serial"))
    native = False
    if options.initializer is not None and ex.native_initializer and isinstance(
        options.job, str
    ):
        ex = get_executor(options.replace(job=ex.name))
        native = True
    ex.refresh()
    return ex, native


def owned_executor(options: Options, max_tasks: int | None = None) -> tuple[Executor, bool]:
    """A new executor that the caller owns (``Pool``), and whether it runs the initializer.

    Args:
        options: as for :func:`create_executor`.
        max_tasks: chunks a worker runs before it is replaced, where the executor
            ``recycles_workers``; elsewhere it is logged as ignored.
    """
    plain = options.replace(initializer=None, initargs=())
    made = create_executor(plain)
    native = options.initializer is not None and made.native_initializer
    if native:
        made.shutdown(wait=True)  # nothing started yet: made again, with the initializer
        made = create_executor(options)
    if max_tasks is not None:
        if made.recycles_workers:
            made.max_tasks = max_tasks
        else:
            log.warning(
                "maxtasksperchild=%d is ignored on job=%r: its workers are not recycled",
                max_tasks, made.name,
            )
    made.refresh()
    return made, native


def shutdown_all(address: str | None = None) -> None:
    """Shut down every cached executor (runs at interpreter exit).

    Args:
        address: only those connected to this cluster address (a service about to stop).
    """
    with _lock:
        keys = [k for k in _cache if address is None or k[2] == address]
        executors = [_cache.pop(k) for k in keys]
    for ex in executors:
        with contextlib.suppress(Exception):  # best effort at exit
            ex.shutdown(wait=True)
            log.info("job %r: stopped the shared pool of %s workers", ex.name, ex.workers)


atexit.register(shutdown_all)


def _make_processes(o: Options) -> Executor:
    from just_distribute.executors.processes import ProcessExecutor

    assert o.workers is not None
    return ProcessExecutor(o.workers, o.initializer, o.initargs)


def _make_threads(o: Options) -> Executor:
    from just_distribute.executors.threads import ThreadExecutor

    assert o.workers is not None
    return ThreadExecutor(o.workers, o.initializer, o.initargs)


def _make_coroutines(o: Options) -> Executor:
    from just_distribute.executors.coroutines import CoroutineExecutor

    assert o.workers is not None
    return CoroutineExecutor(o.workers, o.initializer, o.initargs)


def _make_serial(o: Options) -> Executor:
    from just_distribute.executors.serial import SerialExecutor

    return SerialExecutor(o.initializer, o.initargs)


register_executor("compute", _make_processes, aliases=("processes", "process"))
register_executor(
    "io", _make_threads, aliases=("threads", "thread"),
    default_workers=lambda: min(32, usable_cpus() + 4),
)
register_executor(
    "web", _make_coroutines, aliases=("coroutines", "async"), default_workers=lambda: 64
)
register_executor("serial", _make_serial, default_workers=lambda: 1)
def _make_cluster(o: Options) -> Executor:
    from just_distribute.executors.cluster import create

    return create(o)


register_executor(
    "cluster", _make_cluster, aliases=("dask", "distributed"), default_workers=lambda: None
)


def _adapt_dask_client(job: Any, options: Options) -> Executor | None:
    # Checked by module name so that dask is imported only for a dask object.
    if type(job).__module__.partition(".")[0] != "distributed":
        return None
    from just_distribute.executors.cluster import adapt_client

    return adapt_client(job, options)


object_adapters.append(_adapt_dask_client)
