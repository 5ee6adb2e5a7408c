"""``just_distribute.update()``: records from inside a running call reach the caller live.

On every job (compute, io, web, serial, cluster), in ``Pool`` and in ``compute_this``: the
callback sees a call's updates while the call is still blocked (it waits for a release
that only the callback gives: a file, so that it crosses processes and the cluster), in
order, with the right index; a flood neither blocks the call for good nor loses its last
value; a checkpoint keeps them for the resumed run; outside a run ``update()`` does nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

import just_distribute
from just_distribute import Pool, Update, compute_this, distribute, update
from just_distribute.channel import CAPACITY, Buffer

LOCAL_JOBS = ["compute", "io", "web", "serial"]
FLOOD = 100_000
RELEASE_WAIT = 60.0  # a call that is never released fails instead of hanging


def wait_for_release(x: int, where: str) -> int:
    """Say so, then wait until the caller's callback creates ``where/go-<x>``."""
    update("started", x=x)
    flag = Path(where) / f"go-{x}"
    deadline = time.monotonic() + RELEASE_WAIT
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {x} was never released: its update did not arrive live")
        time.sleep(0.005)
    update(x=x, released=True)
    return x


async def async_wait_for_release(x: int, where: str) -> int:
    import asyncio

    update("started", x=x)
    flag = Path(where) / f"go-{x}"
    deadline = time.monotonic() + RELEASE_WAIT
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {x} was never released")
        await asyncio.sleep(0.005)
    update(x=x, released=True)
    return x


def steps(x: int, n: int) -> int:
    for i in range(n):
        update(x=x, step=i)
    return x


def two_steps(x: int) -> int:
    return steps(x, 2)


def flood(x: int) -> int:
    for i in range(FLOOD):
        update(loss=i)
    return x


class Releaser:
    """The ``on_update`` callback: checks each record and releases the call that started."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.seen: list[Update] = []
        self.thread = threading.get_ident()

    def __call__(self, u: Update) -> None:
        self.seen.append(u)
        if u.message == "started":
            (self.where / f"go-{u.values['x']}").touch()


def check_live(seen: list[Update], n: int) -> None:
    by_call: dict[int, list[Update]] = defaultdict(list)
    for u in seen:
        by_call[u.index].append(u)
    assert sorted(by_call) == list(range(n))
    for index, records in by_call.items():
        # Right index, in order: "started" (which released the call), then the last one.
        assert [u.values["x"] for u in records] == [index, index]
        assert [u.message for u in records] == ["started", None]
        assert records[1].values["released"] is True
        assert records[0].seq < records[1].seq
        assert records[0].worker


# -- outside a run --------------------------------------------------------------------
def test_update_outside_a_run_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="just_distribute")
    assert update("hello", loss=1.0) is None
    assert just_distribute.update is update
    assert not caplog.records


def test_update_in_a_thread_the_call_starts_does_nothing() -> None:
    def call(x: int) -> int:
        t = threading.Thread(target=update, kwargs={"stray": x})
        t.start()
        t.join()
        update(own=x)
        return x

    seen: list[Update] = []
    distribute(call, job="io", workers=2, on_update=seen.append)(range(4))
    assert sorted(u.values["own"] for u in seen) == [0, 1, 2, 3]
    assert all("stray" not in u.values for u in seen)


def test_on_update_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_update must be a callable"):
        distribute(job="io", on_update=3)(steps)  # type: ignore[arg-type]


# -- live, in order, with the right index, on every job ---------------------------------
@pytest.mark.parametrize("job", LOCAL_JOBS)
def test_updates_arrive_while_the_call_is_blocked(job: str, tmp_path: Path) -> None:
    releaser = Releaser(tmp_path)
    f = distribute(job=job, workers=2, chunksize=2, on_update=releaser)(wait_for_release)
    results, report = f.report(range(6), where=str(tmp_path))
    assert results == list(range(6))
    check_live(releaser.seen, 6)
    assert sorted(report.updates) == list(range(6))
    assert [u.message for u in report.updates[3]] == ["started", None]
    assert report.updates_dropped == 0


def test_async_calls_publish_on_the_web_job(tmp_path: Path) -> None:
    releaser = Releaser(tmp_path)
    f = distribute(job="web", workers=3, on_update=releaser)(async_wait_for_release)
    assert f(range(5), where=str(tmp_path)) == list(range(5))
    check_live(releaser.seen, 5)


@pytest.mark.parametrize("job", LOCAL_JOBS)
def test_on_update_runs_in_the_callers_thread_in_order(job: str) -> None:
    threads: set[int] = set()
    seen: list[Update] = []

    def record(u: Update) -> None:
        threads.add(threading.get_ident())
        seen.append(u)

    f = distribute(job=job, workers=2, on_update=record)(steps)
    assert f(range(8), n=50) == list(range(8))
    assert threads == {threading.get_ident()}
    for index in range(8):
        mine = [u for u in seen if u.index == index]
        assert [u.values["step"] for u in mine] == list(range(50))
        assert {u.values["x"] for u in mine} == {index}
        assert [u.seq for u in mine] == sorted(u.seq for u in mine)


@pytest.mark.parametrize("job", LOCAL_JOBS)
def test_a_flood_loses_no_final_value(job: str) -> None:
    seen: list[Update] = []
    f = distribute(job=job, workers=2, on_update=seen.append)(flood)
    results, report = f.report(range(2))
    assert results == [0, 1]
    for index in (0, 1):
        mine = [u.values["loss"] for u in seen if u.index == index]
        assert mine[-1] == FLOOD - 1  # the last value always arrives
        assert mine == sorted(mine)
    # Every record is either delivered or counted as dropped: nothing vanishes unseen.
    assert len(seen) + report.updates_dropped == 2 * FLOOD
    assert sum(map(len, report.updates.values())) == len(seen)
    if job == "compute":
        assert report.updates_dropped > 0  # a tight loop outruns the socket: coalesced


@pytest.mark.parametrize("job", ["io", "serial", "compute"])
def test_an_error_in_on_update_stops_the_run(job: str) -> None:
    def broken(u: Update) -> None:
        raise ValueError(f"display broken at call {u.index}")

    f = distribute(job=job, workers=2, on_update=broken)(steps)
    with pytest.raises(ValueError, match="display broken at call"):
        f(range(4), n=2)


def test_a_slow_callback_thins_a_flood_and_never_blocks_the_call() -> None:
    seen: list[Update] = []

    def slow(u: Update) -> None:
        seen.append(u)
        time.sleep(0.0005)  # a display that redraws on every update

    results, report = distribute(job="compute", workers=1, on_update=slow)(flood).report([7])
    assert results == [7]
    assert seen[-1].values["loss"] == FLOOD - 1
    assert report.updates_dropped > 0
    assert len(seen) + report.updates_dropped == FLOOD


def test_the_buffer_coalesces_older_values_of_the_same_names() -> None:
    buf = Buffer(capacity=10)
    for i in range(100):
        buf.add(("loss", i), 0, (False, "loss"))
        buf.add(("acc", i), 0, (False, "acc"))
    buf.add(("message",), 1, (True,))
    records, dropped = buf.take()
    assert len(records) <= 10
    assert ("loss", 99) in records and ("acc", 99) in records and ("message",) in records
    assert len(records) + dropped == 201
    # Names that never repeat cannot coalesce: the oldest go, the buffer stays bounded.
    for i in range(CAPACITY * 3):
        buf.add(i, 0, (False, f"name{i}"))
    records, dropped = buf.take()
    assert len(records) <= CAPACITY and records[-1] == CAPACITY * 3 - 1
    assert len(records) + dropped == CAPACITY * 3


def test_unpicklable_values_arrive_as_their_repr() -> None:
    seen: list[Update] = []
    f = distribute(job="compute", workers=1, on_update=seen.append)(publish_a_lock)
    assert f([1]) == [1]
    assert "lock" in seen[0].values["lock"]


def publish_a_lock(x: int) -> int:
    update(lock=threading.Lock())
    return x


# -- the other channels ---------------------------------------------------------------
def test_updates_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="just_distribute")
    distribute(job="compute", workers=2)(steps)(range(3), n=2)
    lines = [r.getMessage() for r in caplog.records if "update from call" in r.getMessage()]
    assert len(lines) == 6
    assert any(line.startswith("update from call 2 of steps on compute-") for line in lines)
    assert any("'step': 1" in line for line in lines)


def test_the_progress_bar_shows_the_latest_values(capsys: pytest.CaptureFixture[str]) -> None:
    distribute(job="serial", progress=True)(steps)(range(3), n=4)
    err = capsys.readouterr().err
    assert "step=3" in err and "x=2" in err


def test_report_to_dict_holds_the_updates() -> None:
    _, report = distribute(job="io", workers=2)(steps).report(range(2), n=3)
    data = report.to_dict()
    assert [u["values"]["step"] for u in data["updates"][1]] == [0, 1, 2]
    assert data["updates_dropped"] == 0


# -- checkpoint -----------------------------------------------------------------------
@pytest.mark.parametrize("job", ["compute", "io"])
def test_updates_survive_a_resume(job: str, tmp_path: Path) -> None:
    f = distribute(job=job, workers=2, checkpoint=str(tmp_path))(steps)
    first, report1 = f.report(range(10), n=3)
    seen: list[Update] = []
    again, report2 = f.with_options(on_update=seen.append).report(range(10), n=3)
    assert again == first
    assert report2.calls == 0  # every call restored, none run
    assert {i: [u.values for u in us] for i, us in report2.updates.items()} == {
        i: [u.values for u in us] for i, us in report1.updates.items()
    }
    assert sorted({u.index for u in seen}) == list(range(10))  # replayed to the callback


RESUME_SCRIPT = """
import os, sys
from just_distribute import distribute, update

@distribute(job="serial", checkpoint=sys.argv[1], chunksize=1)
def work(x):
    update("start", x=x)
    if x == 3 and not os.path.exists(sys.argv[2]):
        os._exit(7)  # the caller dies while call 3 runs
    update(x=x, done=True)
    return x

if __name__ == "__main__":
    results, report = work.report(range(6))
    for i in range(6):
        print(i, [u.message or "value" for u in report.updates[i]], report.calls)
"""


def test_a_call_running_when_the_caller_died_loses_only_its_own(tmp_path: Path) -> None:
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, str(script), str(tmp_path / "ck"), str(flag)]
    died = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert died.returncode == 7, died.stderr
    flag.touch()
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    # Calls 0-2 come from the records (the resumed run ran 3 calls: 3, 4, 5); call 3 shows
    # only the updates of its second, finished attempt.
    assert lines == [f"{i} ['start', 'value'] 3" for i in range(6)]


SCRIPT = """
from just_distribute import Update, distribute, update


def fit(rate):
    for epoch in range(3):
        update(epoch=epoch, loss=rate / (epoch + 1))
    update(f"rate {rate} done")
    return rate

if __name__ == "__main__":
    seen = []
    f = distribute(fit, job="compute", workers=2, on_update=seen.append)
    print(f([0.1, 0.2, 0.4]))
    for u in seen:
        print(u.index, u.message or sorted(u.values.items()))
"""


def test_a_script_run_as_main_publishes_from_compute_workers(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[0.1, 0.2, 0.4]"
    for index in range(3):
        mine = [line.split(" ", 1)[1] for line in lines[1:] if line.startswith(f"{index} ")]
        assert len(mine) == 4 and mine[-1] == f"rate {[0.1, 0.2, 0.4][index]} done"
        assert mine[0] == f"[('epoch', 0), ('loss', {[0.1, 0.2, 0.4][index]})]"


# -- Pool and compute_this ------------------------------------------------------------
def test_pool_calls_publish(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="just_distribute")
    seen: list[Update] = []
    with Pool(2, on_update=seen.append) as pool:
        assert pool.map(two_steps, [5, 6, 7], chunksize=1) == [5, 6, 7]
        assert pool.apply_async(steps, (9, 2)).get(timeout=30) == 9
    assert sorted(u.values["x"] for u in seen if u.values["x"] != 9) == [5, 5, 6, 6, 7, 7]
    assert {u.values["x"]: u.index for u in seen if u.values["x"] != 9} == {5: 0, 6: 1, 7: 2}
    assert [u.values["step"] for u in seen if u.values["x"] == 9] == [0, 1]
    assert any("update from call" in r.getMessage() for r in caplog.records)


def test_compute_this_calls_publish_live(tmp_path: Path) -> None:
    releaser = Releaser(tmp_path)
    call = compute_this(job="compute", workers=1, on_update=releaser)(wait_for_release)
    assert call(0, str(tmp_path)).run(timeout=60) == 0
    check_live(releaser.seen, 1)


# -- the cluster ----------------------------------------------------------------------
def test_cluster_updates_arrive_while_the_call_is_blocked(
    cluster_address: str, tmp_path: Path
) -> None:
    releaser = Releaser(tmp_path)
    f = distribute(job="cluster", address=cluster_address, chunksize=2, on_update=releaser)(
        wait_for_release
    )
    results, report = f.report(range(4), where=str(tmp_path))
    assert results == list(range(4))
    check_live(releaser.seen, 4)
    assert sorted(report.updates) == list(range(4))


def test_cluster_order_and_flood(cluster_address: str) -> None:
    seen: list[Update] = []
    f = distribute(job="cluster", address=cluster_address, on_update=seen.append)
    assert f(steps)(range(4), n=30) == list(range(4))
    for index in range(4):
        assert [u.values["step"] for u in seen if u.index == index] == list(range(30))
    seen.clear()
    results, report = f(flood).report(range(2))
    assert results == [0, 1]
    for index in (0, 1):
        mine = [u.values["loss"] for u in seen if u.index == index]
        assert mine[-1] == FLOOD - 1 and mine == sorted(mine)
    assert len(seen) + report.updates_dropped == 2 * FLOOD


def test_compute_this_on_the_cluster_publishes_live(cluster_address: str, tmp_path: Path) -> None:
    releaser = Releaser(tmp_path)
    call = compute_this(address=cluster_address, on_update=releaser)(wait_for_release)
    assert call(0, str(tmp_path)).run(timeout=60) == 0
    check_live(releaser.seen, 1)
