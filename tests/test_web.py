"""``job="web"`` against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from typing import Any

import aiohttp
import pytest
from fixtures_web import WebServer

from just_distribute import config, distribute, web


def _fetcher(server: WebServer, sessions: list[Any], workers: int = 100) -> Any:
    @distribute(job="web", workers=workers)
    async def fetch(i: int, delay: float = 0.05) -> int:
        session = web.session()
        sessions.append(session)
        async with session.get(server.url, params={"i": str(i), "delay": str(delay)}) as resp:
            resp.raise_for_status()
            return int(await resp.text())

    return fetch


@pytest.mark.timeout(60)
def test_thousand_async_calls_come_back_in_input_order(web_server: WebServer) -> None:
    sessions: list[Any] = []
    fetch = _fetcher(web_server, sessions)
    web_server.max_in_flight = 0
    started = time.perf_counter()
    out = fetch(range(1000))
    took = time.perf_counter() - started
    print(f"1000 async calls, 50 ms each, workers=100: {took:.3f} s")
    assert out == list(range(1000))
    # Up to ``workers`` requests were open at once: the calls really overlapped.
    assert 1 < web_server.max_in_flight <= 100


def test_one_session_per_run_closed_when_the_run_ends(web_server: WebServer) -> None:
    sessions: list[Any] = []
    fetch = _fetcher(web_server, sessions, workers=8)
    assert fetch(range(40), delay=0.0) == list(range(40))
    first = sessions[:]
    assert len(first) == 40
    assert all(s is first[0] for s in first)
    assert isinstance(first[0], aiohttp.ClientSession)
    assert first[0].closed
    sessions.clear()
    assert fetch(range(10), delay=0.0) == list(range(10))
    assert all(s is sessions[0] for s in sessions)
    assert sessions[0] is not first[0]
    assert sessions[0].closed


def test_session_outside_a_web_run_says_so() -> None:
    with pytest.raises(RuntimeError, match='job="web"'):
        web.session()


def test_works_inside_a_running_event_loop(web_server: WebServer) -> None:
    sessions: list[Any] = []
    fetch = _fetcher(web_server, sessions, workers=20)

    async def notebook_cell() -> tuple[list[int], list[int]]:
        plain = fetch(range(30), delay=0.0)  # a plain call, as in a notebook cell
        awaited = await fetch.acall(range(30, 60), delay=0.0)
        return plain, awaited

    plain, awaited = asyncio.run(notebook_cell())
    assert plain == list(range(30))
    assert awaited == list(range(30, 60))


def test_awaitable_form_runs_alongside_other_coroutines(web_server: WebServer) -> None:
    sessions: list[Any] = []
    fetch = _fetcher(web_server, sessions, workers=20)

    async def main() -> list[list[int]]:
        return list(
            await asyncio.gather(fetch.acall(range(20), delay=0.0), fetch.acall(range(20, 25)))
        )

    assert asyncio.run(main()) == [list(range(20)), list(range(20, 25))]


def test_plain_function_runs_in_threads(web_server: WebServer) -> None:
    threads: list[str] = []

    @distribute(job="web", workers=8)
    def post(data_to_send: dict[str, int], url: str, api_key: str) -> tuple[int, str]:
        threads.append(threading.current_thread().name)
        query = f"?i={data_to_send['i']}&delay=0.01"
        with urllib.request.urlopen(url + query, timeout=10) as response:
            return int(response.read()), api_key

    records = [{"i": i} for i in range(40)]
    out = post(records, url=web_server.url, api_key="k")
    assert out == [(i, "k") for i in range(40)]
    assert threading.current_thread().name not in threads
    assert len(set(threads)) > 1


def test_http_error_reaches_the_caller_and_the_next_call_works(web_server: WebServer) -> None:
    @distribute(job="web", workers=10)
    async def status(code: int) -> int:
        query = {"i": "1", "delay": "0", "status": str(code)}
        async with web.session().get(web_server.url, params=query) as resp:
            resp.raise_for_status()
            return resp.status

    with pytest.raises(aiohttp.ClientResponseError) as info:
        status([200, 200, 503, 200])
    assert info.value.status == 503
    assert any("call 2" in n and "code=503" in n for n in info.value.__notes__)
    assert status([200, 200]) == [200, 200]


def test_serial_switch_inside_a_running_event_loop() -> None:
    @distribute(job="web", workers=4)
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> tuple[list[int], list[int]]:
        with config(job="serial"):
            serial = double(range(5))  # each call on a loop of its own, beside this one
        return serial, await double.acall(range(5))

    serial, distributed = asyncio.run(main())
    assert serial == distributed == [0, 2, 4, 6, 8]
