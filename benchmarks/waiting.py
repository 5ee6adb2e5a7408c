"""S3 and S4: waiting on I/O with many threads, and many HTTP requests on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from just_distribute import distribute, web

from . import workloads
from .harness import Config, Scenario, measure

OURS = "just_distribute"


def s3(cfg: Config) -> Scenario:
    """S3: 2,000 x ``time.sleep(0.01)`` on 64 threads."""
    n, workers, nap = cfg.size(2000, 200), 64, 0.01
    data = [nap] * n
    ideal = n * nap / workers
    cases: dict[str, Callable[[], Any]] = {}
    ours = distribute(job="io", workers=workers)(workloads.nap)
    cases[OURS] = lambda: ours(data)
    with contextlib.ExitStack() as stack:
        tpe = stack.enter_context(ThreadPoolExecutor(workers))
        cases["ThreadPoolExecutor.map"] = lambda: list(tpe.map(workloads.nap, data))
        with contextlib.suppress(ImportError):
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=workers, backend="threading")
            cases["joblib.Parallel(backend='threading')"] = lambda: par(
                delayed(workloads.nap)(x) for x in data
            )
        rows = measure(cases, cfg.runs, check=lambda r: list(r) == data, ours=(OURS,))
    sc = Scenario(
        "S3", "waiting on I/O",
        f"{n:,} x `time.sleep({nap})`, io, {workers} workers (ideal: {n} x {nap} / {workers} "
        f"= {ideal:.3f} s)",
        rows, reference="ideal", reference_value=ideal, ratio_label="x ideal",
        target="within 1.15x of the ideal",
    )
    ours_row = sc.row(OURS)
    if ours_row.values:
        ratio = ours_row.median / ideal
        sc.met = ratio <= 1.15
        sc.verdict = f"{ratio:.3f}x the ideal"
    return sc


async def fetch(url: str) -> int:
    """S4: one GET through the run's shared session."""
    async with web.session().get(url) as response:
        await response.read()
        return response.status


def hand_written(urls: list[str], limit: int) -> list[int]:
    """S4's reference: aiohttp, an ``asyncio.Semaphore`` and ``gather``, written by hand."""
    import aiohttp

    async def main() -> list[int]:
        sem = asyncio.Semaphore(limit)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(url: str) -> int:
                async with sem, session.get(url) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one(u) for u in urls))

    return asyncio.run(main())


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Start :mod:`benchmarks.server` in a process of its own; yield its base URL."""
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server"], cwd=root,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s4(cfg: Config) -> Scenario:
    """S4: 5,000 GETs to a local aiohttp server on 200 concurrent workers."""
    n, workers = cfg.size(5000, 200), cfg.size(200, 50)
    with server() as base:
        urls = [f"{base}?i={i}" for i in range(n)]
        ours = distribute(job="web", workers=workers)(fetch)
        hand = f"aiohttp + Semaphore({workers}) + gather (hand-written)"
        cases: dict[str, Callable[[], Any]] = {
            OURS: lambda: ours(urls),
            hand: lambda: hand_written(urls, workers),
        }
        rows = measure(cases, cfg.runs, check=lambda r: list(r) == [200] * n, ours=(OURS,))
    sc = Scenario(
        "S4", "many HTTP requests",
        f"{n:,} GETs to a local aiohttp server (its own process), web, {workers} workers",
        rows, reference=hand, ratio_label="x hand-written",
        target="≥ 0.9x the hand-written throughput",
    )
    ours_row, hand_row = sc.row(OURS), sc.row(hand)
    if ours_row.values and hand_row.values:
        throughput = hand_row.median / ours_row.median
        sc.met = throughput >= 0.9
        sc.verdict = (
            f"{throughput:.2f}x the hand-written throughput "
            f"({n / ours_row.median:,.0f} vs {n / hand_row.median:,.0f} requests/s)"
        )
    return sc
