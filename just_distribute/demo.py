"""``just-distribute demo``: every job, serial against distributed, with a table of speedups.

Three workloads, each run once serially (the ``serial`` job: one call after another in
this thread) and once on the job made for it:

- CPU-bound: pure-Python arithmetic (Collatz chain lengths) on ``job="compute"``, and on
  ``job="cluster"`` (an embedded local dask cluster) when the cluster extra is installed;
- IO-bound: calls that wait (a stand-in for disk or database latency) on ``job="io"``;
- web: ``async def`` HTTP requests to a local aiohttp server, started by the demo on
  127.0.0.1, that answers each request after a delay, on ``job="web"``, when the web extra
  (aiohttp) is installed.

The functions are ordinary module-level functions decorated with :func:`distribute`, as a
user would write them. The demo checks that every distributed run returns exactly the
serial results, in order, and exits with 1 if one does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from just_distribute.config import usable_cpus
from just_distribute.decorator import Distributed, distribute

__all__ = ["configure", "main"]

log = logging.getLogger("just_distribute")


# -- the workloads: plain functions, decorated -----------------------------------------------
@distribute(job="compute")
def collatz(start: int, *, span: int) -> int:
    """CPU-bound: the total Collatz chain length of ``start .. start+span-1``."""
    steps = 0
    for n in range(max(1, start), max(1, start) + span):
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            steps += 1
    return steps


@distribute(job="io", workers=32)
def wait_and_echo(item: int, *, wait: float) -> int:
    """IO-bound: wait as a disk or database would, then return the item."""
    time.sleep(wait)
    return item


@distribute(job="web", workers=100)
async def fetch(item: int, *, url: str, delay: float) -> int:
    """Web: one GET to the demo server, through the run's shared session."""
    from just_distribute import web

    params = {"i": str(item), "delay": str(delay)}
    async with web.session().get(url, params=params) as response:
        response.raise_for_status()
        return int(await response.text())


# -- the local web server ----------------------------------------------------------------------
@contextlib.contextmanager
def _web_server() -> Iterator[str]:
    """An aiohttp server on a free port of 127.0.0.1; ``GET /?i=N&delay=S`` answers N after S s."""
    from aiohttp import web

    ready, stop = threading.Event(), threading.Event()
    address: list[str] = []
    failure: list[BaseException] = []

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "0")))
        return web.Response(text=request.query.get("i", "0"))

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            address.append(f"http://127.0.0.1:{runner.addresses[0][1]}/")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="just_distribute-demo-server", daemon=True)
    thread.start()
    if not ready.wait(10) or failure or not address:
        stop.set()
        raise RuntimeError(f"the demo web server did not start: {failure[:1]}")
    try:
        yield address[0]
    finally:
        stop.set()
        thread.join(5)


# -- running and reporting -------------------------------------------------------------------
@dataclass
class Row:
    """One workload: its serial time, and its time on a job."""

    workload: str
    calls: int
    job: str
    workers: int
    serial: float
    distributed: float
    startup: float
    correct: bool

    @property
    def speedup(self) -> float:
        """Serial time over distributed time."""
        return self.serial / self.distributed if self.distributed > 0 else float("inf")


class _Bar:
    """One progress bar over every run of the demo, fed by ``progress=`` callbacks."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="call", desc="demo", dynamic_ncols=True)

    def stage(self, name: str) -> Callable[[int, int | None], None]:
        """A progress callback for one run, labelled ``name`` on the bar."""
        if self._bar is not None:
            self._bar.set_description(name)
        seen = [0]

        def update(done: int, total: int | None) -> None:
            if self._bar is not None:
                self._bar.update(done - seen[0])
            seen[0] = done

        return update

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _timed(
    fn: Distributed[..., Any], bar: _Bar, label: str, args: tuple[Any, ...],
    kwargs: dict[str, Any], **options: Any,
) -> tuple[list[Any], float, int]:
    run = fn.with_options(progress=bar.stage(label), **options)
    started = time.perf_counter()
    results, report = run.report(*args, **kwargs)
    return results, time.perf_counter() - started, report.workers


def _workload(
    bar: _Bar, name: str, fn: Distributed[..., Any], args: tuple[Any, ...],
    kwargs: dict[str, Any], jobs: list[tuple[str, dict[str, Any]]],
) -> list[Row]:
    calls = len(args[0])
    expected, serial, _ = _timed(fn, bar, f"{name} · serial", args, kwargs, job="serial")
    rows = []
    for job, options in jobs:
        # Start the job's workers first with one call, so the table shows the steady state
        # and the start-up cost apart (pools and clusters are kept and reused).
        started = time.perf_counter()
        warm = 4 * usable_cpus()  # enough calls to reach every worker process
        fn.with_options(job=job, **options)(*(a[:warm] for a in args), **kwargs)
        startup = time.perf_counter() - started
        got, took, workers = _timed(fn, bar, f"{name} · {job}", args, kwargs, job=job, **options)
        rows.append(Row(name, calls, job, workers, serial, took, startup, got == expected))
    return rows


def _table(rows: list[Row]) -> str:
    head = (
        f"{'workload':<10} {'calls':>6} {'serial s':>9}   {'job':<8} {'workers':>7} "
        f"{'distributed s':>13} {'speedup':>8}  {'same results':<12} {'start-up s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.workload:<10} {r.calls:>6} {r.serial:>9.2f}   {r.job:<8} {r.workers:>7} "
            f"{r.distributed:>13.2f} {r.speedup:>7.1f}x  {'yes' if r.correct else 'NO':<12} "
            f"{r.startup:>10.2f}"
        )
    return "\n".join(lines)


def _cluster_available() -> str | None:
    """None if the cluster job can run here, else why not."""
    if importlib.util.find_spec("just_distribute.executors.cluster") is None:
        return "the cluster job is not part of this version"
    try:
        cluster = importlib.import_module("just_distribute.executors.cluster")
        # The module imports dask lazily, when a cluster job starts: ask for it here.
        cluster._import_distributed()
    except ImportError as exc:  # MissingExtraError is one, and says how to install it
        return str(exc)
    return None


def _web_available() -> str | None:
    """None if the web workload can run here (it needs aiohttp), else why not."""
    if importlib.util.find_spec("aiohttp") is None:
        return 'aiohttp is not installed (pip install "just-distribute[web]")'
    return None


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the demo's arguments."""
    parser.add_argument(
        "--quick", action="store_true", help="tiny workloads (a few seconds; used by the tests)"
    )
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the embedded dask cluster"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Run the demo; print the table; return 0 if every run gave the serial results."""
    quick = bool(args.quick)
    cpu_calls, span = (16, 100) if quick else (120, 1500)
    io_calls, wait = (40, 0.01) if quick else (200, 0.02)
    web_calls, delay = (60, 0.02) if quick else (100, 0.05)
    cluster_skip = "--no-cluster was given" if args.no_cluster else _cluster_available()
    web_skip = _web_available()
    cpu_runs = 1 if cluster_skip else 2
    total = cpu_calls * (1 + cpu_runs) + 2 * io_calls + (0 if web_skip else 2 * web_calls)

    print(
        f"just_distribute demo: each workload serially (job='serial'), then distributed; "
        f"{usable_cpus()} usable CPUs",
        flush=True,
    )
    bar = _Bar(total, enabled=not args.no_progress)
    rows: list[Row] = []
    try:
        cpu_jobs: list[tuple[str, dict[str, Any]]] = [("compute", {})]
        if cluster_skip is None:
            cpu_jobs.append(("cluster", {}))
        starts = [1 + i * span for i in range(cpu_calls)]
        rows += _workload(bar, "cpu", collatz, (starts,), {"span": span}, cpu_jobs)
        rows += _workload(
            bar, "io", wait_and_echo, (range(io_calls),), {"wait": wait}, [("io", {})]
        )
        if web_skip is None:
            with _web_server() as url:
                rows += _workload(
                    bar, "web", fetch, (range(web_calls),), {"url": url, "delay": delay},
                    [("web", {})],
                )
    finally:
        bar.close()
    print()
    print(_table(rows))
    if cluster_skip is not None:
        print(f"\ncluster: not run ({cluster_skip})")
    if web_skip is not None:
        print(f"\nweb: not run ({web_skip})")
    print(
        "\nstart-up: the first use of a job starts its workers (once; they are reused).\n"
        "cpu: Collatz chain lengths in pure Python; io: a "
        f"{wait * 1000:.0f} ms wait per call; web: async GETs to a local aiohttp server "
        f"answering after {delay * 1000:.0f} ms."
    )
    if not all(r.correct for r in rows):
        print("\nERROR: a distributed run did not return the serial results")
        return 1
    return 0
