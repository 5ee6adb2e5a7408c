"""Options, and the one place where they are resolved.

Precedence, highest first: an argument given to the decorator (or the method call) >
the innermost ``config()`` context > ``JUST_DISTRIBUTE_*`` environment variables > defaults.

One exception is the debugging switch: ``job="serial"`` set by ``config()`` or by
``JUST_DISTRIBUTE_JOB=serial`` forces *every* decorated function to run serially, whatever
its decorator says, so that a whole program can be stepped through in pdb.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

__all__ = ["Options", "config", "resolve_options", "usable_cpus"]

ProgressOption = bool | Callable[[int, int | None], None]


@dataclasses.dataclass(frozen=True)
class Options:
    """Every setting that shapes a run. See :func:`just_distribute.distribute` for meanings."""

    job: Any = "compute"
    workers: int | None = None
    address: str | None = None
    autobatch: bool = True
    batches: int | None = None
    flatten: bool = False
    chunksize: int | None = None
    max_in_flight: int | None = None
    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: float = 0.0
    on_error: Literal["raise", "return"] = "raise"
    progress: ProgressOption = False
    on_update: Callable[[Any], None] | None = None
    checkpoint: str | None = None
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    connect_timeout: float = 10.0
    tls: Any = None

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied and checked."""
        return check_options(dataclasses.replace(self, **changes))


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Options))

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "just_distribute_config", default=_EMPTY
)


def _env_settings(skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Read the ``JUST_DISTRIBUTE_*`` environment variables that are set.

    Args:
        skip: option names already given with higher precedence; their variables are not
            read, so a bad value there cannot fail a call that does not use it.
    """
    env = os.environ
    out: dict[str, Any] = {}
    parsers: dict[str, Callable[[str], Any]] = {
        "JOB": str,
        "WORKERS": int,
        "ADDRESS": str,
        "CHUNKSIZE": int,
        "TIMEOUT": float,
        "RETRIES": int,
        "ON_ERROR": str,
        "CONNECT_TIMEOUT": float,
        "TLS": str,
        "CHECKPOINT": str,
        "PROGRESS": lambda s: s.strip().lower() in {"1", "true", "yes", "on"},
    }
    for key, parse in parsers.items():
        if key.lower() in skip:
            continue
        raw = env.get(f"JUST_DISTRIBUTE_{key}")
        if raw is None or raw == "":
            continue
        try:
            out[key.lower()] = parse(raw)
        except ValueError:
            raise ValueError(
                f"environment variable JUST_DISTRIBUTE_{key}={raw!r} is not a valid "
                f"{getattr(parse, '__name__', 'value')}; fix or unset it"
            ) from None
    return out


def _check_names(settings: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(sorted(OPTION_NAMES))}"
        )


@contextlib.contextmanager
def config(**settings: Any) -> Iterator[None]:
    """Set default options for every decorated function called inside the block.

    Decorator arguments still win, except ``job="serial"``, which forces serial runs (the
    debugging switch). The settings follow asyncio tasks and threads started with
    ``contextvars.copy_context()``.

    Example:
        >>> from just_distribute import config
        >>> with config(job="serial"):
        ...     pass  # every decorated function runs in this thread, one call at a time
    """
    _check_names(settings, "config()")
    check_options(Options(**{**_context.get(), **settings}))
    token = _context.set({**_context.get(), **settings})
    try:
        yield
    finally:
        _context.reset(token)


def usable_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_options(o: Options) -> Options:
    """Validate option values; raise ``ValueError``/``TypeError`` naming the bad option."""
    if o.workers is not None and (isinstance(o.workers, bool) or not isinstance(o.workers, int)):
        raise TypeError(f"workers must be an int >= 1, got {o.workers!r}")
    if o.workers is not None and o.workers < 1:
        raise ValueError(f"workers must be >= 1, got {o.workers}; use workers=1 or more")
    if o.batches is not None and o.batches < 1:
        raise ValueError(f"batches must be >= 1, got {o.batches}")
    if o.chunksize is not None and o.chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {o.chunksize}")
    if o.max_in_flight is not None and o.max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {o.max_in_flight}")
    if o.timeout is not None and not o.timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {o.timeout!r}")
    if o.timeout is not None and o.chunksize is not None and o.chunksize > 1:
        # A chunk's calls run one after another in one worker, which reports back once:
        # a slow call in it could not be told from a slow chunk.
        raise ValueError(
            f"timeout={o.timeout} bounds each call and cannot be combined with "
            f"chunksize={o.chunksize}: drop chunksize (with a timeout, calls are sent one "
            f"at a time) or set chunksize=1"
        )
    if o.retries < 0:
        raise ValueError(f"retries must be >= 0, got {o.retries}")
    if o.backoff < 0:
        raise ValueError(f"backoff must be >= 0 seconds, got {o.backoff}")
    if o.on_error not in ("raise", "return"):
        raise ValueError(f'on_error must be "raise" or "return", got {o.on_error!r}')
    if not isinstance(o.retry_on, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in o.retry_on
    ):
        raise TypeError(f"retry_on must be a tuple of exception types, got {o.retry_on!r}")
    if not isinstance(o.initargs, tuple):
        raise TypeError(f"initargs must be a tuple, got {type(o.initargs).__name__}")
    if not isinstance(o.progress, bool) and not callable(o.progress):
        raise TypeError(
            f"progress must be True (a progress bar), False, or a callable fn(done, total); "
            f"got {o.progress!r}"
        )
    if o.on_update is not None and not callable(o.on_update):
        raise TypeError(
            f"on_update must be a callable fn(update) (it gets a just_distribute.Update), "
            f"or None; got {o.on_update!r}"
        )
    return o


def resolve_options(explicit: Mapping[str, Any]) -> Options:
    """Combine explicit arguments, the ``config()`` context, the environment and defaults."""
    _check_names(explicit, "distribute()")
    ctx = _context.get()
    # The job is always read: JUST_DISTRIBUTE_JOB=serial overrides even the decorator.
    env = _env_settings(frozenset(explicit).union(ctx) - {"job"})
    merged: dict[str, Any] = {**env, **ctx, **explicit}
    # The debugging switch: serial from the context or the environment beats the decorator.
    forced = ctx.get("job", env.get("job"))
    if forced == "serial":
        merged["job"] = "serial"
    if "retry_on" in merged and isinstance(merged["retry_on"], type):
        merged["retry_on"] = (merged["retry_on"],)
    return check_options(Options(**merged))
