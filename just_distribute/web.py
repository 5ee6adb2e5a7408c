"""Helpers for functions that run on ``job="web"``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from just_distribute.errors import MissingExtraError
from just_distribute.executors.base import RunScope, current_run

if TYPE_CHECKING:
    import aiohttp

__all__ = ["session"]


_KEY = "aiohttp.ClientSession"


def session() -> aiohttp.ClientSession:
    """The ``aiohttp.ClientSession`` shared by every call of the current web run.

    Made on first use in a run and closed when the run ends, so that all calls reuse one
    connection pool (opening a session per request costs a TCP and TLS handshake each).

    Example:
        >>> from just_distribute import distribute, web
        >>> @distribute(job="web", workers=100)
        ... async def fetch(url: str) -> int:
        ...     async with web.session().get(url) as response:
        ...         return response.status

    Raises:
        RuntimeError: called outside a call run by ``job="web"``.
        MissingExtraError: aiohttp is not installed.
    """
    run = current_run.get()
    if run is None:
        raise RuntimeError(
            "just_distribute.web.session() works only inside an async function run by "
            'job="web"; elsewhere create your own aiohttp.ClientSession'
        )
    existing = run.resources.get(_KEY)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    try:
        import aiohttp
    except ImportError:
        raise MissingExtraError("just_distribute.web.session()", "web", "aiohttp") from None
    made = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    run.resources[_KEY] = made
    loop = asyncio.get_running_loop()

    def close() -> None:
        if not made.closed and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(made.close(), loop).result(timeout=10)

    run.on_close(close)
    return made


async def run_with_scope(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Await ``fn(*args, **kwargs)`` with a run scope of its own (one call, one session).

    Used where an ``async def`` function runs outside the web job (serial, threads,
    processes), each call on an event loop of its own.
    """
    scope = RunScope()
    token = current_run.set(scope)
    try:
        return await fn(*args, **kwargs)
    finally:
        current_run.reset(token)
        made = scope.resources.get(_KEY)
        if made is not None:
            await made.close()
        scope.close()
