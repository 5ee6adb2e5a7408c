"""Many HTTP requests on one event loop, one shared session, retries for a flaky API.

A small aiohttp server on 127.0.0.1 stands in for a real API: GET /items/{i} answers after
20 ms; GET /flaky/{i} answers 503 the first time each i is asked for.

Run: python examples/web_api.py
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import aiohttp
from aiohttp import web as aioweb

from just_distribute import distribute, web


def start_demo_api() -> str:
    """Serve the demo API on a free port of 127.0.0.1 in a daemon thread; return its URL."""
    seen: Counter[str] = Counter()
    ready = threading.Event()
    base: list[str] = []

    async def item(request: aioweb.Request) -> aioweb.Response:
        await asyncio.sleep(0.02)
        i = int(request.match_info["i"])
        return aioweb.json_response({"id": i, "square": i * i})

    async def flaky(request: aioweb.Request) -> aioweb.Response:
        i = request.match_info["i"]
        seen[i] += 1
        if seen[i] == 1:
            return aioweb.Response(status=503, text="try again")
        return aioweb.json_response({"id": int(i)})

    async def serve() -> None:
        app = aioweb.Application()
        app.router.add_get("/items/{i}", item)
        app.router.add_get("/flaky/{i}", flaky)
        runner = aioweb.AppRunner(app, access_log=None)
        await runner.setup()
        await aioweb.TCPSite(runner, "127.0.0.1", 0).start()
        base.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the demo API did not start")
    return base[0]


@distribute(job="web", workers=100)
async def get_item(i: int, *, base: str) -> dict[str, int]:
    async with web.session().get(f"{base}/items/{i}") as response:
        response.raise_for_status()
        data: dict[str, int] = await response.json()
        return data


@distribute(
    job="web", workers=50, retries=3, backoff=0.02,
    retry_on=(aiohttp.ClientResponseError, aiohttp.ClientConnectionError),
)
async def get_flaky(i: int, *, base: str) -> int:
    async with web.session().get(f"{base}/flaky/{i}") as response:
        response.raise_for_status()
        return int((await response.json())["id"])


def main() -> None:
    base = start_demo_api()
    start = time.perf_counter()
    items = get_item(range(1_000), base=base)
    elapsed = time.perf_counter() - start
    assert [item["id"] for item in items] == list(range(1_000))
    print(f"web: 1000 requests of 20 ms, 100 at a time, in {elapsed:.2f} s "
          f"(serially: {1_000 * 0.02:.0f} s)")

    ids = get_flaky(range(100), base=base)
    assert ids == list(range(100))
    print("retries: 100 flaky requests, each failed once with 503, all succeeded")
    print("web_api ok")


if __name__ == "__main__":
    main()
