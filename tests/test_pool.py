"""``Pool``: the ``multiprocessing.Pool`` behaviours, on compute, io and a real dask cluster."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from just_distribute import Pool, SendError, WorkerLostError, config, distribute
from just_distribute.pool import PoolTerminatedError

JOBS = ["compute", "io", "cluster"]


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is bad ({x})")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


# -- the initializer: what each worker records ---------------------------------------------
_initialized: set[str] = set()


def _identity() -> str:
    """A worker: a process (compute, cluster) or a thread (io)."""
    return f"{os.getpid()}-{threading.get_ident()}"


def record_worker(directory: str) -> None:
    me = _identity()
    _initialized.add(me)
    Path(directory, f"{me}-{uuid.uuid4().hex}").touch()


def who_am_i(_: int) -> tuple[str, bool]:
    time.sleep(0.002)  # long enough for every worker to get some calls
    me = _identity()
    return me, me in _initialized


def make_pool(job: str, address: str | None, processes: int = 2, **kwargs: Any) -> Pool:
    if job == "cluster":
        return Pool(processes, job=job, address=address, **kwargs)
    return Pool(processes, job=job, **kwargs)


@pytest.fixture(scope="module", params=JOBS)
def job_address(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """A job name, and the scheduler address when it is the cluster."""
    job: str = request.param
    address = request.getfixturevalue("cluster_address") if job == "cluster" else None
    return job, address


@pytest.fixture(scope="module")
def pool(job_address: tuple[str, str | None]) -> Iterator[Pool]:
    """One pool per job, shared by the tests that leave it running."""
    with make_pool(*job_address) as p:
        yield p


# -- map, starmap ---------------------------------------------------------------------
def test_map_and_starmap_return_results_in_input_order(pool: Pool) -> None:
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.map(square, (x for x in range(7)), 2) == [x * x for x in range(7)]
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.starmap(add, iter([(1,), (2, 5)]), chunksize=1) == [1, 7]


def test_lambdas_and_closures_run_on_every_job(pool: Pool) -> None:
    offset = 100
    assert pool.map(lambda x: x + offset, range(5)) == [100, 101, 102, 103, 104]
    assert pool.apply(lambda a, b: a * b + offset, (3, 4)) == 112


def test_map_raises_the_first_error_naming_the_call(pool: Pool) -> None:
    with pytest.raises(ValueError, match="three is bad") as info:
        pool.map(fail_on_three, range(6), chunksize=1)
    assert any("fail_on_three" in note for note in info.value.__notes__)


def test_progress_reaches_the_total(pool: Pool) -> None:
    seen: list[tuple[int, int | None]] = []
    assert pool.map(square, range(12), progress=lambda d, t: seen.append((d, t))) == [
        x * x for x in range(12)
    ]
    assert seen[-1] == (12, 12)


# -- the async forms ---------------------------------------------------------------------
def test_map_async_wait_ready_get_and_callback(pool: Pool) -> None:
    got: list[list[int]] = []
    result = pool.map_async(square, range(10), callback=got.append)
    result.wait(timeout=60)
    assert result.ready() and result.successful()
    assert result.get() == [x * x for x in range(10)]
    assert got == [[x * x for x in range(10)]]  # called before the result became ready


def test_map_async_error_reaches_get_and_error_callback(pool: Pool) -> None:
    errors: list[BaseException] = []
    called: list[Any] = []
    result = pool.map_async(
        fail_on_three, range(6), 1, callback=called.append, error_callback=errors.append
    )
    with pytest.raises(ValueError, match="three is bad"):
        result.get(timeout=60)
    assert not result.successful()
    assert called == []
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_map_async_get_times_out_and_successful_refuses_before_ready(pool: Pool) -> None:
    result = pool.map_async(nap, [0.5])
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.01)
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    assert result.get(timeout=60) == [0.5]


def test_starmap_async_with_callback(pool: Pool) -> None:
    got: list[list[int]] = []
    result = pool.starmap_async(add, [(1, 1), (2, 2)], callback=got.append)
    assert result.get(timeout=60) == [2, 4]
    assert got == [[2, 4]]


def test_imap_in_order_and_imap_unordered_complete(pool: Pool) -> None:
    assert list(pool.imap(square, iter(range(30)))) == [x * x for x in range(30)]
    assert list(pool.imap(square, range(9), chunksize=2)) == [x * x for x in range(9)]
    unordered = list(pool.imap_unordered(square, (x for x in range(30))))
    assert sorted(unordered) == [x * x for x in range(30)]


def test_imap_next_timeout_and_error(pool: Pool) -> None:
    it = pool.imap(nap, [0.5])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.01)
    assert it.next(timeout=60) == 0.5
    with pytest.raises(StopIteration):
        next(it)
    failing = pool.imap(fail_on_three, range(6), chunksize=1)
    assert [next(failing) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three is bad"):
        next(failing)


def test_apply_and_apply_async(pool: Pool) -> None:
    assert pool.apply(add, (1, 2)) == 3
    assert pool.apply(add, (1,), {"b": 5}) == 6
    assert pool.apply(square, [4]) == 16
    with pytest.raises(TypeError, match="args must be a tuple"):
        pool.apply(square, 3)  # type: ignore[arg-type]
    got: list[int] = []
    assert pool.apply_async(square, (5,), callback=got.append).get(timeout=60) == 25
    assert got == [25]
    errors: list[BaseException] = []
    failing = pool.apply_async(fail_on_three, (3,), error_callback=errors.append)
    with pytest.raises(ValueError, match="three is bad") as info:
        failing.get(timeout=60)
    assert not failing.successful()
    assert errors == [info.value]
    assert any("fail_on_three(3)" in note for note in info.value.__notes__)


def test_many_apply_async_get_their_own_results_and_errors(pool: Pool) -> None:
    results = [pool.apply_async(fail_on_three, (i % 5,)) for i in range(300)]
    for i, result in enumerate(results):
        if i % 5 == 3:
            with pytest.raises(ValueError, match="three is bad") as info:
                result.get(timeout=60)
            # One note, naming the call (its number counts the function's apply calls).
            (note,) = info.value.__notes__
            assert re.fullmatch(r"just_distribute: raised by call \d+: fail_on_three\(3\)", note)
        else:
            assert result.get(timeout=60) == i % 5


def test_an_unsendable_argument_fails_only_its_own_apply(pool: Pool) -> None:
    results = [pool.apply_async(add, (i, 1)) for i in range(50)]
    bad = pool.apply_async(add, (threading.Lock(), 1))
    results += [pool.apply_async(add, (i, 2)) for i in range(50)]
    assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(50)] + [
        i + 2 for i in range(50)
    ]
    # The pickling error itself on processes (as multiprocessing raises), the + in threads.
    with pytest.raises((TypeError, pickle.PicklingError)) as info:
        bad.get(timeout=60)
    assert not isinstance(info.value, SendError)


# -- life cycle -----------------------------------------------------------------------------
def test_close_refuses_new_work_and_join_waits_for_the_rest(
    job_address: tuple[str, str | None],
) -> None:
    pool = make_pool(*job_address)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pending = pool.map_async(nap, [0.2, 0.2, 0.2], 1)
    streaming = pool.imap(square, range(5))
    pool.close()
    for submit in (
        lambda: pool.map(square, [1]),
        lambda: pool.apply(square, (1,)),
        lambda: pool.apply_async(square, (1,)),
        lambda: pool.imap(square, [1]),
        lambda: pool.starmap_async(add, [(1, 2)]),
    ):
        with pytest.raises(ValueError, match="not running"):
            submit()
    pool.join()
    assert pending.ready() and pending.get() == [0.2, 0.2, 0.2]
    assert list(streaming) == [0, 1, 4, 9, 16]  # buffered by join()


def test_terminate_fails_pending_results_and_refuses_new_work(
    job_address: tuple[str, str | None],
) -> None:
    pool = make_pool(*job_address)
    assert pool.map(square, [3]) == [9]  # workers up
    errors: list[BaseException] = []
    pending = pool.map_async(nap, [3.0, 3.0], 1, error_callback=errors.append)
    single = pool.apply_async(nap, (3.0,))
    streaming = pool.imap(nap, [3.0] * 4, 1)
    pool.terminate()
    with pytest.raises(PoolTerminatedError):
        list(streaming)
    with pytest.raises(PoolTerminatedError):
        pending.get(timeout=30)
    with pytest.raises(PoolTerminatedError):
        single.get(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], PoolTerminatedError)
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    pool.join()  # allowed after terminate, as in the standard library


def test_context_manager_terminates(job_address: tuple[str, str | None]) -> None:
    with make_pool(*job_address) as pool:
        assert pool.map(square, [2, 3]) == [4, 9]
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    with pytest.raises(ValueError):
        pool.__enter__()


def test_initializer_runs_once_in_each_worker(
    job_address: tuple[str, str | None], tmp_path: Path
) -> None:
    job, address = job_address
    with make_pool(job, address, 2, initializer=record_worker, initargs=(str(tmp_path),)) as p:
        seen = p.map(who_am_i, range(40), chunksize=1)
        seen += [p.apply(who_am_i, (0,)) for _ in range(3)]
    assert all(initialized for _, initialized in seen), seen
    records = [path.name.rsplit("-", 1)[0] for path in tmp_path.iterdir()]
    assert len(records) == len(set(records)), f"a worker ran the initializer twice: {records}"
    assert {me for me, _ in seen} <= set(records)
    if job != "cluster":  # a cluster has its own size
        assert len(records) <= 2


def test_the_decorator_runs_its_initializer_once_in_each_worker(
    job_address: tuple[str, str | None], tmp_path: Path
) -> None:
    job, address = job_address
    options: dict[str, Any] = {"job": job, "workers": 2, "chunksize": 1}
    if job == "cluster":
        options = {"job": job, "address": address, "chunksize": 1}
    f = distribute(who_am_i, initializer=record_worker, initargs=(str(tmp_path),), **options)
    seen = [*f(range(40)), f.submit(0).result(timeout=60)]
    assert all(initialized for _, initialized in seen), seen
    records = [path.name.rsplit("-", 1)[0] for path in tmp_path.iterdir()]
    assert len(records) == len(set(records)), f"a worker ran the initializer twice: {records}"
    assert {me for me, _ in seen} <= set(records)


def test_the_serial_job_runs_the_initializer_once(tmp_path: Path) -> None:
    f = distribute(who_am_i, job="serial", initializer=record_worker, initargs=(str(tmp_path),))
    assert all(initialized for _, initialized in f(range(5)) + f(range(3)))
    assert len(list(tmp_path.iterdir())) == 1


_MAIN_SCRIPT = """
import os, sys
from just_distribute import Pool

def load(tag):
    global MODEL  # the usual pattern: load something once per worker into a global
    MODEL = (tag, os.getpid())

def predict(x):
    return MODEL[0] * x, MODEL[1]

if __name__ == "__main__":
    job, address = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    with Pool(2, load, (10,), job=job, address=address) as pool:
        mapped = pool.map(predict, range(20), chunksize=1)
        applied = pool.apply(predict, (5,))
        again = list(pool.imap(lambda x: predict(x)[0], range(3)))
    assert [value for value, _ in mapped] == [10 * x for x in range(20)], mapped
    assert applied[0] == 50 and again == [0, 10, 20]
    print("workers", len({pid for _, pid in mapped + [applied]}))
"""


def test_initializer_globals_reach_the_functions_of_a_main_script(
    job_address: tuple[str, str | None], tmp_path: Path
) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(_MAIN_SCRIPT)
    job, address = job_address
    argv = [sys.executable, str(script), job] + ([address] if address else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("workers ")


def die_on_13(x: int) -> int:
    if x == 13:
        os._exit(3)
    return x


@pytest.mark.timeout(90)
def test_a_call_that_kills_its_worker_fails_alone() -> None:
    with Pool(2, job="compute") as pool:
        results = [pool.apply_async(die_on_13, (i,)) for i in range(40)]
        for i, result in enumerate(results):
            if i == 13:
                with pytest.raises(WorkerLostError):
                    result.get(timeout=60)
            else:
                assert result.get(timeout=60) == i
        with pytest.raises(WorkerLostError) as info:
            pool.map(die_on_13, range(20))
        assert "raised by call 13" in info.value.__notes__[0]
        assert pool.map(square, range(3)) == [0, 1, 4]  # the pool replaced its workers


def broken_initializer() -> None:
    raise RuntimeError("no model today")


@pytest.mark.timeout(60)
def test_a_failing_initializer_fails_calls_and_never_hangs() -> None:
    from concurrent.futures import BrokenExecutor

    with Pool(2, broken_initializer, job="compute") as pool:
        with pytest.raises(RuntimeError, match="no model today") as info:
            pool.map(square, range(4))
        assert "initializer" in info.value.__notes__[0]
        with pytest.raises(RuntimeError, match="no model today"):
            pool.apply(square, (1,))
    with Pool(2, broken_initializer, job="io") as pool, pytest.raises(BrokenExecutor):
        pool.map(square, range(4))
    with pytest.raises(RuntimeError, match="no model today"):
        Pool(1, broken_initializer, job="serial")


# -- the other jobs, arguments, and what is refused ----------------------------------------
def test_web_and_serial_jobs(tmp_path: Path) -> None:
    with Pool(3, job="web") as web:
        assert web.map(async_square, range(10)) == [x * x for x in range(10)]
        assert web.map(square, range(10)) == [x * x for x in range(10)]
        assert sorted(web.imap_unordered(async_square, iter(range(5)))) == [0, 1, 4, 9, 16]
        assert web.apply(async_square, (7,)) == 49
        assert web.starmap(add, [(1, 2)]) == [3]
    with Pool(job="serial", initializer=record_worker, initargs=(str(tmp_path),)) as serial:
        assert serial.map(who_am_i, range(3)) == [(_identity(), True)] * 3
        assert serial.apply(async_square, (3,)) == 9
        assert serial.apply(who_am_i, (0,)) == (_identity(), True)
        # Every form runs in the caller's own thread, as the serial job promises.
        assert list(serial.imap(who_am_i, iter(range(3)))) == [(_identity(), True)] * 3
        assert serial.map_async(who_am_i, [0]).get(timeout=10) == [(_identity(), True)]
    serial = Pool(job="serial")
    unread = serial.imap_unordered(square, iter(range(4)))
    serial.close()
    serial.join()  # runs what is left, here, instead of waiting for a reader forever
    assert sorted(unread) == [0, 1, 4, 9]
    assert len(list(tmp_path.iterdir())) == 1


def test_web_initializer_runs_once_per_consumer(tmp_path: Path) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    async def init(tag: int) -> None:
        with lock:
            calls.append(tag)

    async def initialized(x: int) -> int:
        await asyncio.sleep(0.001)
        return len(calls)

    with Pool(3, initializer=init, initargs=(7,), job="web") as web:
        counts = web.map(initialized, range(60), chunksize=1)
    assert all(count >= 1 for count in counts)
    assert 1 <= len(calls) <= 3 and set(calls) == {7}


def test_constructor_and_argument_errors(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="processes"):
        Pool(0, job="io")
    with pytest.raises(TypeError, match="initializer"):
        Pool(2, initializer=3, job="io")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(2, maxtasksperchild=0, job="io")
    with pytest.raises(ValueError, match="ray"):
        Pool(2, job="ray")
    with caplog.at_level(logging.WARNING, logger="just_distribute"), Pool(
        2, None, (), 5, job="io"
    ) as p:
        assert p.map(square, [1, 2]) == [1, 4]
    assert "maxtasksperchild" in caplog.text
    with Pool(2, job="io") as p:
        with pytest.raises(TypeError):
            p.map(square, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            p.map(5, [1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="kwds"):
            p.apply(add, (1,), [2])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunksize"):
            p.map(square, [1], chunksize=0)
        with pytest.raises(NotImplementedError):
            pickle.dumps(p)


def test_config_context_applies_and_serial_switch_wins() -> None:
    with config(job="serial"), Pool(4, job="io") as p:
        assert p.map(lambda _: threading.get_ident(), range(3)) == [threading.get_ident()] * 3


def _pid(_: int) -> int:
    return os.getpid()


@pytest.mark.timeout(90)
def test_maxtasksperchild_replaces_worker_processes_on_compute(tmp_path: Path) -> None:
    with Pool(2, record_worker, (str(tmp_path),), 2, job="compute") as pool:
        pids = pool.map(_pid, range(12), chunksize=1)
        assert sorted(pool.map(square, range(6), chunksize=1)) == [0, 1, 4, 9, 16, 25]
    # 12 one-call tasks, at most 2 per process: at least 6 processes ran them...
    assert len(set(pids)) >= 6, pids
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert max(counts.values()) <= 2, counts
    # ...and the initializer ran once in each of them.
    starts = [path.name.split("-", 1)[0] for path in tmp_path.iterdir()]
    assert set(map(str, pids)) <= set(starts)
    assert len(starts) == len(set(starts))

