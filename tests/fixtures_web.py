"""A real aiohttp server on 127.0.0.1 for the web job's tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class WebServer:
    """A running test server: ``url`` answers GET ``/?i=N&delay=S`` with ``N`` after S s."""

    url: str
    hits: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def _serve(server: WebServer, ready: threading.Event, stop: threading.Event) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "0.05"))
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            await asyncio.sleep(delay)
        finally:
            server.in_flight -= 1
        i = request.query.get("i", "")
        if i.isdigit():
            server.hits.append(int(i))
        status = int(request.query.get("status", "200"))
        return web.Response(text=i, status=status)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}/"
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="session")
def web_server() -> Iterator[WebServer]:
    """One aiohttp server for the session, on a free port of 127.0.0.1."""
    server = WebServer(url="")
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(server, ready, stop), daemon=True)
    thread.start()
    assert ready.wait(10), "the test web server did not start"
    yield server
    stop.set()
    thread.join(5)
