"""Progress inside a chunk (issue 17, item 5): a running chunk reports its finished calls.

With ``chunksize=100``, the display must not wait for a whole chunk: the worker reports how
many of its calls are done (at most every 0.1 s), on every job, and the engine counts each
call once, also when a chunk is retried or its worker dies.

Ordering is checked by events, not by the clock: each call leaves a marker file; the
progress callback looks, when it is first called, at which calls have started.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from just_distribute import distribute

JOBS = ["compute", "io", "web", "web-async", "serial", "cluster"]


def on(job: str, request: pytest.FixtureRequest, fn: Any, **options: Any) -> Any:
    """``distribute(fn, job=job, workers=2, ...)``; the cluster on the session's service."""
    if job == "cluster":
        options["address"] = request.getfixturevalue("cluster_address")
    elif job != "serial":
        options["workers"] = 2
    return distribute(fn, job=job, **options)


def nap(x: int, *, marker_dir: str) -> int:
    Path(marker_dir, str(x)).touch()
    time.sleep(0.01)
    return x


async def nap_async(x: int, *, marker_dir: str) -> int:
    Path(marker_dir, str(x)).touch()
    await asyncio.sleep(0.01)
    return x


def instant(x: int) -> int:
    return x


class Watcher:
    """A progress callable that records ``done`` and the calls that had started then."""

    def __init__(self, marker_dir: Path | None = None, total: int = 300) -> None:
        self.marker_dir = marker_dir
        self.total = total
        self.seen: list[int] = []
        self.first_started: set[int] | None = None
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        assert total == self.total
        with self.lock:
            if self.first_started is None and self.marker_dir is not None:
                self.first_started = {int(p.name) for p in self.marker_dir.iterdir()}
            self.seen.append(done)

    def check_counts(self) -> None:
        """Every call counted once: rising, never past the total, ending at it."""
        assert self.seen, "the display never moved"
        assert self.seen == sorted(self.seen), self.seen
        assert self.seen[-1] == self.total and max(self.seen) == self.total, self.seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", JOBS)
def test_the_display_moves_before_the_first_chunk_of_100_calls_ends(
    job: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fn = nap_async if job == "web-async" else nap
    job = "web" if job == "web-async" else job
    watcher = Watcher(tmp_path)
    f = on(job, request, fn, chunksize=100, progress=watcher)
    assert f(range(300), marker_dir=str(tmp_path)) == list(range(300))
    # The chunks are calls 0-99, 100-199 and 200-299. When the display first moved, the
    # last call of none of them had started: no chunk was complete, the count came from
    # inside a running chunk. (Before: the first move was a whole finished chunk, 100.)
    started = watcher.first_started
    assert started is not None
    assert not {99, 199, 299} & started, sorted(started)
    assert 0 < watcher.seen[0] < 100, watcher.seen[:5]
    watcher.check_counts()
    assert len(watcher.seen) > 3  # more moves than the three chunks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io", "cluster"])
def test_chunks_that_finish_fast_send_no_ticks(job: str, request: pytest.FixtureRequest) -> None:
    watcher = Watcher()
    f = on(job, request, instant, chunksize=100, progress=watcher)
    assert f(range(300)) == list(range(300))
    # 100 instant calls end long before a tick is due: one move per chunk, nothing else.
    assert watcher.seen == [100, 200, 300]


def die_once_at_150(x: int, *, marker_dir: str) -> int:
    """Call 150 kills its worker process, the first time only; 10 ms a call."""
    if x == 150:
        marker = Path(marker_dir, "died")
        if not marker.exists():
            marker.touch()
            os._exit(9)
    time.sleep(0.01)
    return x


def fail_once_at_150(x: int, *, marker_dir: str) -> int:
    if x == 150:
        marker = Path(marker_dir, "failed")
        if not marker.exists():
            marker.touch()
            raise ConnectionError("call 150 fails once")
    time.sleep(0.01)
    return x


@pytest.mark.timeout(120)
def test_a_chunk_whose_worker_died_is_not_counted_twice(tmp_path: Path) -> None:
    watcher = Watcher()
    f = distribute(die_once_at_150, job="compute", workers=2, chunksize=100, progress=watcher)
    assert f(range(300), marker_dir=str(tmp_path)) == list(range(300))
    assert (tmp_path / "died").exists()  # the worker did die mid-chunk
    # Calls 100-149 were reported done by the lost worker, then ran again one at a time.
    watcher.check_counts()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io"])
def test_a_retried_call_is_not_counted_twice(
    job: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    watcher = Watcher()
    f = on(job, request, fail_once_at_150, chunksize=100, progress=watcher, retries=1,
           backoff=0)
    assert f(range(300), marker_dir=str(tmp_path)) == list(range(300))
    assert (tmp_path / "failed").exists()
    watcher.check_counts()


def total_of(xs: list[int]) -> int:
    time.sleep(0.01)
    return sum(xs)


@pytest.mark.timeout(60)
def test_ticks_count_elements_for_batch_calls() -> None:
    watcher = Watcher(total=1200)
    f = distribute(total_of, job="io", workers=2, batches=120, chunksize=20, progress=watcher)
    assert sum(f(list(range(1200)))) == sum(range(1200))
    # 120 batches of 10 elements in chunks of 20 batches: ticks count elements too.
    assert any(n % 200 for n in watcher.seen), watcher.seen
    watcher.check_counts()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["compute", "io"])
def test_the_tqdm_bar_shows_calls_inside_the_first_chunk(
    job: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    f = on(job, request, nap, chunksize=100, progress=True)
    assert f(range(300), marker_dir=str(tmp_path)) == list(range(300))
    shown = [int(n) for n in re.findall(r"(\d+)/300", capsys.readouterr().err)]
    assert shown[-1] == 300
    # Drawn before any chunk of 100 had finished (before: 0, 100, 200, 300 only).
    assert any(0 < n < 100 for n in shown), shown
