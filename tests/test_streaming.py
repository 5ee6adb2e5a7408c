"""Streaming: ``f.iter`` and ``Pool.imap``/``imap_unordered`` yield results as they come,
keep a bounded number of calls in flight, and carry a generator through in bounded memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from just_distribute import Pool, config, distribute


def echo(x: int) -> int:
    return x


class InFlight:
    """Counts calls running, and inputs pulled but not yet handed back to the consumer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.max_running = 0
        self.pulled = self.consumed = self.max_ahead = 0

    def call(self, x: int) -> int:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(0.002)
        with self.lock:
            self.running -= 1
        return x

    def source(self, n: int) -> Iterator[int]:
        for i in range(n):
            with self.lock:
                self.pulled += 1
                self.max_ahead = max(self.max_ahead, self.pulled - self.consumed)
            yield i

    def consume(self, results: Iterator[int]) -> list[int]:
        out = []
        for value in results:
            with self.lock:
                self.consumed += 1
            out.append(value)
        return out


# -- order ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_iter_yields_in_input_order_as_results_become_ready() -> None:
    first_received = threading.Event()

    def call(i: int) -> Any:
        if i == 7:  # finishes only once the caller holds the first result
            return first_received.wait(timeout=20)
        return i

    f = distribute(job="io", workers=4, chunksize=1)(call)
    results = f.iter(range(8))
    assert next(results) == 0
    first_received.set()
    assert list(results) == [1, 2, 3, 4, 5, 6, True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["iter", "imap_unordered"])
def test_unordered_yields_in_completion_order(how: str) -> None:
    fast_received = threading.Event()

    def call(i: int) -> Any:
        if i == 0:  # finishes only once the caller holds a later result
            return ("slow", fast_received.wait(timeout=20))
        return ("fast", i)

    if how == "iter":
        f = distribute(job="io", workers=4, chunksize=1)(call)
        results = f.iter(range(4), ordered=False)
        first = next(results)
        fast_received.set()
        rest = list(results)
    else:
        with Pool(4, job="io") as pool:
            results = pool.imap_unordered(call, range(4), chunksize=1)
            first = next(results)
            fast_received.set()
            rest = list(results)
    assert first[0] == "fast"
    assert ("slow", True) in rest
    assert sorted([*rest, first]) == [("fast", 1), ("fast", 2), ("fast", 3), ("slow", True)]


def test_ordered_results_before_an_error_arrive_first() -> None:
    def call(i: int) -> int:
        if i == 5:
            raise KeyError(i)
        time.sleep(0.01 if i < 5 else 0)  # the failing call finishes before earlier ones
        return i

    f = distribute(job="io", workers=4, chunksize=1)(call)
    received = []
    with pytest.raises(KeyError) as info:
        for value in f.iter(range(10)):
            received.append(value)
    assert received == [0, 1, 2, 3, 4]
    assert "raised by call 5" in info.value.__notes__[0]


# -- bounded in-flight --------------------------------------------------------------------
def test_iter_keeps_calls_in_flight_within_max_in_flight() -> None:
    counter = InFlight()
    f = distribute(job="io", workers=8, max_in_flight=3, chunksize=1)(counter.call)
    assert counter.consume(f.iter(counter.source(200))) == list(range(200))
    assert counter.max_running <= 3
    assert counter.max_running >= 2  # and they do run in parallel
    assert counter.max_ahead <= 3  # the generator is never read further ahead


@pytest.mark.parametrize(("job", "ordered"), [("compute", True), ("compute", False),
                                             ("cluster", True)])
def test_iter_reads_a_generator_lazily_on_process_jobs(
    job: str, ordered: bool, request: pytest.FixtureRequest
) -> None:
    counter = InFlight()
    where = {"address": request.getfixturevalue("cluster_address")} if job == "cluster" else {}
    f = distribute(job=job, workers=2, max_in_flight=4, chunksize=5, **where)(echo)
    results = counter.consume(f.iter(counter.source(200), ordered=ordered))
    assert sorted(results) == list(range(200))
    assert counter.max_ahead <= 4 * 5


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_pool_imap_keeps_calls_in_flight_bounded(method: str) -> None:
    counter = InFlight()
    with config(max_in_flight=3), Pool(8, job="io") as pool:
        results = counter.consume(getattr(pool, method)(counter.call, counter.source(200), 1))
    assert sorted(results) == list(range(200))
    assert counter.max_running <= 3
    # The engine's window plus the two chunks handed between the pool's thread and you.
    assert counter.max_ahead <= 3 + 2


def test_an_abandoned_imap_stops_reading_its_input() -> None:
    counter = InFlight()
    with Pool(2, job="io") as pool:
        results = pool.imap(counter.call, counter.source(10_000), 1)
        assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
        del results
        deadline = time.monotonic() + 10
        pulled = counter.pulled
        while time.monotonic() < deadline:  # settles once the driver has stopped
            time.sleep(0.2)
            if counter.pulled == pulled:
                break
            pulled = counter.pulled
    assert counter.pulled < 100


# -- memory: a generator far larger than the memory limit ------------------------------------
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, resource, sys, time
    from just_distribute import Pool, distribute

    BLOB = 100_000

    def size(blob):
        time.sleep(0.001)
        return len(blob)

    async def async_size(blob):
        await asyncio.sleep(0.001)
        return len(blob)

    def blobs(n):
        for _ in range(n):
            yield bytes(BLOB)

    def vm_size():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize"):
                    return int(line.split()[1]) * 1024

    def main(job, n, headroom, modes):
        workers = 2 if job == "compute" else 4
        fn = async_size if job == "web" else size
        f = distribute(job=job, workers=workers)(fn)
        pool = Pool(workers, job=job)
        # Start the workers and threads before the limit: only streaming is measured.
        assert f([b"ab"]) == [2] and list(pool.imap(fn, iter([b"abc"]))) == [3]
        limit = vm_size() + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for mode in modes:
            if mode == "iter":
                results = f.iter(blobs(n))
            else:
                results = getattr(pool, mode)(fn, blobs(n))
            assert sum(results) == n * BLOB, mode
            print("streamed", mode, flush=True)
        try:
            everything = list(blobs(n))
        except MemoryError:
            print("materialising: MemoryError", flush=True)
        else:
            print("materialised", len(everything), flush=True)
        pool.terminate()

    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 2**20, sys.argv[4].split(","))
    """
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("job", "modes"),
    [("compute", "iter,imap"), ("io", "iter,imap_unordered"), ("web", "iter")],
)
def test_a_generator_larger_than_memory_streams_through(
    job: str, modes: str, tmp_path: Path
) -> None:
    script = tmp_path / "stream_memory.py"
    script.write_text(_MEMORY_SCRIPT)
    # 3,000 blobs of 100 kB: 300 MB if materialised, against 200 MB of headroom.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # thread arenas would reserve 64 MB each
    proc = subprocess.run(
        [sys.executable, str(script), job, "3000", "200", modes],
        capture_output=True, text=True, timeout=80, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [f"streamed {mode}" for mode in modes.split(",")] == lines[:-1]
    assert lines[-1] == "materialising: MemoryError"  # the limit is real
