"""Fault injection: dead workers, Ctrl-C, nested calls, things that cannot be sent.

Whatever goes wrong, the caller gets a clear error naming the call (never a hang), the pool
heals, and the next call works. Faults that must survive a signal run in a subprocess.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from just_distribute import distribute
from just_distribute.config import resolve_options
from just_distribute.errors import ReceiveError, SendError, WorkerLostError
from just_distribute.executors import executor_for, get_executor
from just_distribute.executors.processes import ProcessExecutor

SCRIPTS = Path(__file__).parent / "fault_scripts"
ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


def compute_pool(workers: int = WORKERS) -> ProcessExecutor:
    ex = get_executor(resolve_options({"job": "compute", "workers": workers}))
    assert isinstance(ex, ProcessExecutor)
    return ex


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# -- functions run by the workers (module level: the workers import this module) ---------


def die_by_exit(x: int) -> int:
    if x == 3:
        os._exit(7)
    return x * 2


def die_by_sigkill(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


def die_by_segfault(x: int) -> int:
    if x == 3:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x * 2


def plus_one(x: int) -> int:
    return x + 1


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


DEATHS = {
    "os._exit": (die_by_exit, 7),
    "SIGKILL": (die_by_sigkill, -signal.SIGKILL),
    "segfault": (die_by_segfault, -signal.SIGSEGV),
}


# -- 1. a worker dies mid-call ---------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", list(DEATHS))
def test_worker_death_names_the_call_and_the_pool_heals(how: str) -> None:
    fn, exitcode = DEATHS[how]
    f = distribute(fn, job="compute", workers=WORKERS, chunksize=4)
    with pytest.raises(WorkerLostError) as info:
        f(range(10))
    err = info.value
    assert err.exitcode == exitcode
    assert "just_distribute: raised by call 3:" in "\n".join(err.__notes__)
    assert "x=3" in "\n".join(err.__notes__)
    assert str(err.pid) in str(err)
    assert not psutil.pid_exists(err.pid) or psutil.Process(err.pid).status() == "zombie"
    # The pool replaced the worker: the next call works.
    assert distribute(plus_one, job="compute", workers=WORKERS)(range(20)) == list(range(1, 21))


@pytest.mark.timeout(60)
def test_worker_death_costs_only_the_culprit_with_on_error_return() -> None:
    # Chunks of 4: the chunk that lost its worker is re-run one call at a time, so the
    # innocent calls of that chunk still get their results.
    f = distribute(die_by_sigkill, job="compute", workers=WORKERS, chunksize=4, on_error="return")
    out = f(range(12))
    assert isinstance(out[3], WorkerLostError)
    assert [v for i, v in enumerate(out) if i != 3] == [2 * i for i in range(12) if i != 3]


def mark_then_pid_after(directory: str, seconds: float) -> int:
    # A file per start: the test kills the workers only once the long calls run.
    Path(directory, f"start-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(seconds)
    return os.getpid()


@pytest.mark.timeout(60)
def test_worker_killed_from_outside_is_retried_and_no_result_is_lost(tmp_path: Path) -> None:
    pool = compute_pool()
    f = distribute(
        mark_then_pid_after, job="compute", workers=WORKERS, chunksize=1, retries=2
    )
    f([str(tmp_path)] * 2, [0.0, 0.0])  # start both workers
    victims = pool.pids()
    assert len(victims) == WORKERS
    for p in tmp_path.iterdir():
        p.unlink()

    def kill_when_running() -> None:
        # Not a fixed sleep: wait until both long calls have started in the victims.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = {int(p.name.split("-")[1]) for p in tmp_path.glob("start-*")}
            if set(victims) <= started:
                break
            time.sleep(0.01)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    out = f([str(tmp_path)] * 4, [2.0, 2.0, 0.1, 0.1])
    killer.join()
    assert len(out) == 4 and all(isinstance(pid, int) for pid in out)
    assert not set(out) & set(victims)  # every call's result came from a fresh worker
    starts = list(tmp_path.glob("start-*"))
    assert len(starts) >= 6  # the two killed calls started again: a retry, not luck
    assert set(pool.pids()).isdisjoint(victims)


# -- 5. Ctrl-C ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "cluster"])
def test_ctrl_c_reaches_the_caller_kills_the_workers_and_the_next_call_works(
    tmp_path: Path, job: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "ctrl_c.py"), str(tmp_path), job],
        stdout=subprocess.PIPE, text=True, env=script_env(),
    )
    events: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        events["ready"] = json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("started-*"))) < WORKERS:
            assert time.monotonic() < deadline, "the long calls never started"
            time.sleep(0.05)
        workers = {int(p.name.rsplit("-", 1)[1]) for p in tmp_path.glob("started-*")}
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            event = json.loads(line)
            events[event["event"]] = event
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "interrupted" in events, events
    # CLOCK_MONOTONIC is shared by the processes of one machine: the caller's own moment.
    latency = events["interrupted"]["at"] - sent
    assert latency < 5, f"KeyboardInterrupt took {latency:.2f}s"
    assert events["children"]["pids"] == []
    if job == "compute":  # the busy workers were killed (dask tasks cannot be)
        assert not any(psutil.pid_exists(pid) for pid in workers)
    assert events["next"]["result"] == [1, 2, 3, 4]


# -- 6. nested calls ----------------------------------------------------------------------


@distribute(job="compute", workers=WORKERS)
def inner_compute(x: int) -> int:
    return x * 10


@distribute(job="compute", workers=WORKERS)
def compute_in_compute(x: int) -> list[int]:
    return inner_compute(range(x))


@distribute(job="io", workers=WORKERS)
def inner_io(x: int) -> str:
    return f"{x}:{threading.current_thread().name}"


@distribute(job="compute", workers=WORKERS)
def io_in_compute(x: int) -> list[str]:
    return inner_io(range(x))


@distribute(job="io", workers=WORKERS)
def io_in_io(x: int) -> tuple[str, list[str]]:
    return threading.current_thread().name, inner_io(range(x))


@distribute(job="web", workers=4)
async def inner_web(x: int) -> int:
    await asyncio.sleep(0.001)
    return -x


@distribute(job="web", workers=4)
async def web_in_web(x: int) -> list[int]:
    return inner_web(range(x))


@distribute(job="web", workers=4)
async def web_in_web_awaited(x: int) -> list[int]:
    return await inner_web.acall(range(x))


@pytest.mark.timeout(60)
def test_nested_compute_in_compute() -> None:
    assert compute_in_compute([1, 2, 3]) == [[0], [0, 10], [0, 10, 20]]


@pytest.mark.timeout(60)
def test_nested_io_in_compute_uses_a_thread_pool_in_the_worker() -> None:
    out = io_in_compute([2, 3])
    assert [[s.split(":")[0] for s in row] for row in out] == [["0", "1"], ["0", "1", "2"]]
    assert all("just_distribute-io" in s for row in out for s in row)


@pytest.mark.timeout(60)
def test_nested_io_in_io_runs_serially_in_the_outer_thread() -> None:
    for outer_thread, inner in io_in_io([2, 3, 1, 2]):
        assert {s.split(":", 1)[1] for s in inner} == {outer_thread}


@pytest.mark.timeout(60)
def test_nested_web_in_web() -> None:
    assert web_in_web([1, 3]) == [[0], [0, -1, -2]]
    assert web_in_web_awaited([2]) == [[0, -1]]


@pytest.mark.timeout(90)
def test_nested_functions_defined_in_main_are_sent_by_value() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "nested_main.py")],
        capture_output=True, text=True, env=script_env(), timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "daemonic" not in out.stderr
    result = json.loads(out.stdout)
    assert result["outer"] == [[0, 100], [0, 10, 100, 101], [0, 10, 20, 100, 101, 102]]
    assert result["factorial"] == [120, 720]


# -- 7. what cannot be sent ---------------------------------------------------------------

UNSENDABLE_WORKERS = 9  # a count no other test uses: a pool of its own


def numbers() -> Any:
    yield 1


@pytest.mark.timeout(60)
def test_unsendable_things_fail_in_the_caller_naming_the_object() -> None:
    lock = threading.Lock()

    def uses_lock(x: int) -> int:
        with lock:
            return x

    def takes_constant(x: int, *, source: Any) -> int:
        return x

    def identity(x: Any) -> Any:
        return x

    def check(call: Any, *needles: str) -> SendError:
        with pytest.raises(SendError) as info:
            call()
        for needle in needles:
            assert needle in str(info.value), str(info.value)
        assert isinstance(info.value, TypeError)
        return info.value

    # A pool of its own (a worker count no other test uses: compute pools are shared by
    # count), to see that no worker was ever started for it.
    opts: dict[str, Any] = {"job": "compute", "workers": UNSENDABLE_WORKERS}
    check(lambda: distribute(uses_lock, **opts)([1, 2]), "'lock'", "thread lock")
    check(
        lambda: distribute(takes_constant, **opts)([1], source=numbers()),
        "keyword constant 'source'", "generator",
    )
    err = check(
        lambda: distribute(identity, **opts)([1, 2, threading.Lock()]),
        "positional argument 1", "thread lock",
    )
    assert "raised by call 2: " in "\n".join(err.__notes__)
    assert "identity(x=<unlocked" in "\n".join(err.__notes__)
    with open(__file__) as handle:
        check(lambda: distribute(identity, **opts)([handle]), "open file")
    # Nothing reached a worker: the pool these calls used (the registry's choice for these
    # options, as the decorator makes it) never started one...
    own_pool, _ = executor_for(resolve_options(opts))
    assert isinstance(own_pool, ProcessExecutor)
    assert own_pool.pids() == []
    # ...and it is that pool: a call that can be sent starts its workers.
    assert distribute(identity, **opts)([1, 2]) == [1, 2]
    assert len(own_pool.pids()) >= 1
    # The same function on io needs no sending at all.
    assert distribute(uses_lock, job="io", workers=2)([1, 2]) == [1, 2]


@pytest.mark.timeout(60)
def test_more_functions_than_a_worker_caches_still_run() -> None:
    # A worker keeps the last few functions it was sent; the caller must know which.
    fns = [distribute(lambda x, k=k: x + k, job="compute", workers=WORKERS) for k in range(12)]
    for _ in range(2):
        for k, f in enumerate(fns):
            assert f([0, 1, 2, 3]) == [k, k + 1, k + 2, k + 3]


class PickyError(Exception):
    """Pickles as ``PickyError("4-b")``, which fails to rebuild: ``__init__`` wants two."""

    def __init__(self, a: int, b: str) -> None:
        super().__init__(f"{a}-{b}")
        self.a = a


def raise_picky(x: int) -> int:
    if x == 4:
        raise PickyError(x, "b")
    return x


@pytest.mark.timeout(60)
def test_an_exception_whose_init_takes_other_arguments_comes_back_as_itself() -> None:
    f = distribute(raise_picky, job="compute", workers=WORKERS, chunksize=3)
    with pytest.raises(PickyError, match="4-b") as info:
        f(range(8))
    assert info.value.a == 4
    assert "raised by call 4: raise_picky(x=4)" in "\n".join(info.value.__notes__)
    out = f.with_options(on_error="return")(range(8))
    assert isinstance(out[4], PickyError)
    assert [v for i, v in enumerate(out) if i != 4] == [0, 1, 2, 3, 5, 6, 7]


def return_lock_on_four(x: int) -> Any:
    return threading.Lock() if x == 4 else x


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "cluster"])
def test_a_result_that_cannot_be_sent_back_costs_only_its_call(
    job: str, request: pytest.FixtureRequest
) -> None:
    where: dict[str, Any] = {"workers": WORKERS}
    if job == "cluster":
        where = {"address": request.getfixturevalue("cluster_address")}
    f = distribute(return_lock_on_four, job=job, chunksize=3, **where)
    with pytest.raises(ReceiveError, match=r"result of this call \(lock\)") as info:
        f(range(8))
    assert "raised by call 4: return_lock_on_four(x=4)" in "\n".join(info.value.__notes__)
    out = f.with_options(on_error="return")(range(8))
    assert isinstance(out[4], ReceiveError)
    assert [v for i, v in enumerate(out) if i != 4] == [0, 1, 2, 3, 5, 6, 7]
