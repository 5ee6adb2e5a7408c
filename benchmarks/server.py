"""S4's web server: aiohttp on 127.0.0.1, in a process of its own (its own GIL).

Run as ``python -m benchmarks.server``; it prints its port on the first line of stdout and
serves ``GET /?i=N&delay=S`` (answers ``N`` after ``S`` seconds) until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys


async def _serve() -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "0"))
        if delay > 0:
            await asyncio.sleep(delay)
        return web.Response(text=request.query.get("i", ""))

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    # Stop when the parent closes our stdin (or dies).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve())
