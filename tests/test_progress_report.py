"""Progress bars and callbacks, the run report, and logging — on every job."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from just_distribute import Pool, distribute
from just_distribute.errors import CallTimeoutError

JOBS = ["compute", "io", "web", "serial", "cluster"]


def on(job: str, request: pytest.FixtureRequest, **options: Any) -> Any:
    """``distribute(job=job, workers=2, ...)``; the cluster job on the session's service."""
    if job == "cluster":
        options["address"] = request.getfixturevalue("cluster_address")
    return distribute(job=job, workers=2, **options)


def square(x: int) -> int:
    return x * x


def total(xs: list[int]) -> int:
    return sum(xs)


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


class Recorder:
    """A progress callable that keeps every ``(done, total)`` it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int | None]] = []
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        with self.lock:
            self.seen.append((done, total))


# -- progress ---------------------------------------------------------------------------
@pytest.mark.parametrize("job", JOBS)
def test_progress_callback_moves_as_chunks_finish(
    job: str, request: pytest.FixtureRequest
) -> None:
    rec = Recorder()
    f = on(job, request, chunksize=5, progress=rec)(square)
    assert f(range(40)) == [x * x for x in range(40)]
    dones = [d for d, _ in rec.seen]
    assert len(dones) == 8  # one update per chunk of 5
    assert dones == sorted(dones) and len(set(dones)) == len(dones)
    assert rec.seen[-1] == (40, 40)
    assert all(t == 40 for _, t in rec.seen)


@pytest.mark.parametrize("job", JOBS)
def test_progress_counts_elements_for_batch_calls(
    job: str, request: pytest.FixtureRequest
) -> None:
    rec = Recorder()
    f = on(job, request, batches=4, progress=rec)(total)
    assert sum(f(list(range(100)))) == sum(range(100))
    assert rec.seen[-1] == (100, 100)
    assert all(t == 100 for _, t in rec.seen)


@pytest.mark.parametrize("job", JOBS)
def test_progress_bar_moves_on_every_job(
    job: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    f = on(job, request, chunksize=3, progress=True)(square)
    assert f(range(30)) == [x * x for x in range(30)]
    err = capsys.readouterr().err
    assert "square:" in err
    assert "0/30" in err and "30/30" in err  # it started at zero and reached the end
    assert "call/s" in err or "s/call" in err
    assert err.endswith("\n")  # closed: a closed bar ends its line


@pytest.mark.parametrize("job", JOBS)
def test_progress_bar_counts_elements(
    job: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    f = on(job, request, batches=4, progress=True)(total)
    f(list(range(100)))
    err = capsys.readouterr().err
    assert "100/100" in err and "element" in err


async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


def test_progress_and_report_of_async_calls_on_the_web_job() -> None:
    rec = Recorder()
    f = distribute(job="web", workers=4, chunksize=5, progress=rec)(async_square)
    results, report = f.report(range(30))
    assert results == [x * x for x in range(30)]
    assert rec.seen[-1] == (30, 30) and len(rec.seen) == 6
    assert report.calls == 30 == sum(s.calls for s in report.per_worker.values())


def test_progress_of_a_stream_of_unknown_length(capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder()
    f = distribute(job="io", workers=2, progress=rec)(square)
    assert list(f.iter(x for x in range(25))) == [x * x for x in range(25)]
    assert rec.seen[-1] == (25, None)
    bar = distribute(job="io", workers=2, progress=True)(square)
    list(bar.iter(x for x in range(25)))
    err = capsys.readouterr().err
    assert "25call" in err.replace(" ", "") and "/25" not in err


@pytest.mark.parametrize("job", JOBS)
def test_progress_bar_is_closed_when_a_call_fails(
    job: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    f = on(job, request, chunksize=2, progress=True)(fail_on_seven)
    with pytest.raises(ValueError, match="seven"):
        f(range(20))
    err = capsys.readouterr().err
    assert "fail_on_seven:" in err and "/20" in err
    assert "20/20" not in err  # it stopped where the run stopped
    assert err.endswith("\n")


def test_progress_bar_is_closed_when_iteration_stops_early(
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = distribute(job="io", workers=2, chunksize=1, progress=True)(square)
    it = f.iter(range(1000))
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    assert isinstance(it, types.GeneratorType)
    it.close()
    err = capsys.readouterr().err
    assert "square:" in err and "/1000" in err and err.endswith("\n")


def test_progress_rejects_what_it_cannot_use() -> None:
    bad: Any = 3
    with pytest.raises(TypeError, match="progress"):
        distribute(job="io", progress=bad)(square)


def test_pool_map_progress(capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder()
    with Pool(2, job="io") as pool:
        assert pool.map(square, range(20), chunksize=4, progress=rec) == [
            x * x for x in range(20)
        ]
        pool.map(square, range(12), progress=True)
    assert rec.seen[-1] == (20, 20) and len(rec.seen) == 5
    assert "12/12" in capsys.readouterr().err


# -- the run report ---------------------------------------------------------------------
@pytest.mark.parametrize("job", JOBS)
def test_report_per_worker_calls_add_up(job: str, request: pytest.FixtureRequest) -> None:
    f = on(job, request, chunksize=4)(square)
    results, report = f.report(range(57))
    assert results == [x * x for x in range(57)]
    assert report.calls == 57
    assert sum(s.calls for s in report.per_worker.values()) == 57
    assert sum(s.chunks for s in report.per_worker.values()) == 15  # ceil(57 / 4)
    assert sum(s.share for s in report.per_worker.values()) == pytest.approx(1.0)
    assert report.job == job and report.function == "square"
    assert 1 <= len(report.per_worker) <= (1 if job == "serial" else 2)
    assert report.wall > 0 and report.throughput == pytest.approx(57 / report.wall)
    table = report.table()
    assert "57 calls" in table
    for name in report.per_worker:
        assert name[:28] in table
    assert str(report) == table


@pytest.mark.parametrize("job", JOBS)
def test_report_counts_batch_calls(job: str, request: pytest.FixtureRequest) -> None:
    f = on(job, request, batches=4)(total)
    results, report = f.report(list(range(100)))
    assert sum(results) == sum(range(100))
    assert report.calls == 4
    assert sum(s.calls for s in report.per_worker.values()) == 4


def test_report_busy_time_is_measured() -> None:
    def nap(x: float) -> float:
        time.sleep(x)
        return x

    _, report = distribute(job="io", workers=2)(nap).report([0.05] * 4)
    assert report.busy >= 0.2 * 0.9  # four naps of 0.05 s, allowing for clock granularity
    data = report.to_dict()
    assert data["calls"] == 4
    assert sum(w["calls"] for w in data["per_worker"].values()) == 4


def test_each_concurrent_call_gets_its_own_report() -> None:
    f = distribute(job="io", workers=4, chunksize=3)(square)
    sizes = [10, 25, 40, 55, 70, 85]
    reports: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            _, report = f.report(range(n))
            reports[n] = sum(s.calls for s in report.per_worker.values())
            assert report.calls == n
        except BaseException as exc:  # re-raised below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert reports == {n: n for n in sizes}


def test_report_counts_every_attempt_of_a_retried_call() -> None:
    attempts: dict[int, int] = {}

    def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        if x == 3 and attempts[x] == 1:
            raise OSError("transient")
        return x

    results, report = distribute(job="serial", retries=1)(flaky).report(range(6))
    assert results == list(range(6))
    assert report.calls == 7
    assert sum(s.calls for s in report.per_worker.values()) == 7


def test_report_of_an_empty_input() -> None:
    results, report = distribute(job="io")(square).report([])
    assert results == [] and report.calls == 0 and report.per_worker == {}
    assert "0 calls" in report.table()


# -- logging ----------------------------------------------------------------------------
def test_retries_and_timeouts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    attempts: dict[int, int] = {}

    def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        if attempts[x] == 1 and x == 2:
            raise OSError("transient")
        return x

    def slow(x: float) -> float:
        time.sleep(x)
        return x

    caplog.set_level(logging.INFO, logger="just_distribute")
    assert distribute(job="serial", retries=2)(flaky)(range(4)) == [0, 1, 2, 3]
    out = distribute(job="io", workers=2, timeout=0.2, on_error="return")(slow)([0.0, 1.0])
    assert out[0] == 0.0 and isinstance(out[1], CallTimeoutError)
    records = [r for r in caplog.records if r.name == "just_distribute"]
    messages = [r.getMessage() for r in records]
    assert any("flaky failed (OSError: transient)" in m and "retry 1 of 2" in m for m in messages)
    assert any("slow ran longer than timeout=0.2s" in m and "call 1 of" in m for m in messages)
    assert all(r.levelno == logging.WARNING for r in records if "retry" in r.getMessage())


def test_pools_started_and_stopped_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="just_distribute")
    with Pool(3, job="io") as pool:
        pool.map(square, range(5))
    distribute(job="io", workers=13)(square)(range(5))  # a worker count no other test uses
    messages = [r.getMessage() for r in caplog.records if r.name == "just_distribute"]
    assert "job 'io': started a pool of 3 workers" in messages
    assert "job 'io': stopped a pool of 3 workers" in messages
    assert "job 'io': started a shared pool of 13 workers" in messages


def test_the_cluster_address_is_logged(
    cluster_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="just_distribute")
    f = distribute(job="cluster", address=cluster_address, workers=5)  # a fresh client
    assert f(square)(range(3)) == [0, 1, 4]
    messages = [r.getMessage() for r in caplog.records if r.name == "just_distribute"]
    assert f"job 'cluster': connected to the dask scheduler at {cluster_address}" in messages


_SCRIPT = """
import logging, sys
from just_distribute import distribute

def cube(x: int) -> int:
    return x ** 3

if __name__ == "__main__":
    if sys.argv[1] == "log":
        logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    for job in ("compute", "io", "web", "serial"):
        assert distribute(job=job, workers=2)(cube)(range(9))[-1] == 512
    if sys.argv[1] == "quiet":  # the embedded cluster too: a service and a dask client
        assert distribute(job="cluster", workers=1)(cube)(range(9))[-1] == 512
    sys.stdout.write("done")
"""


@pytest.mark.timeout(90)
def test_the_library_prints_nothing_by_itself_and_logs_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    quiet = subprocess.run(
        [sys.executable, str(script), "quiet"], capture_output=True, text=True, timeout=80
    )
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("done", "")
    loud = subprocess.run(
        [sys.executable, str(script), "log"], capture_output=True, text=True, timeout=80
    )
    assert loud.returncode == 0, loud.stderr
    for job in ("compute", "io", "web"):
        assert f"job {job!r}: started a shared pool of 2 workers" in loud.stderr
        assert f"job {job!r}: stopped the shared pool of 2 workers" in loud.stderr
    assert re.search(r"compute pool: 2 worker processes", loud.stderr)


# -- issue 17, item 5: the display moves at once; notebooks without ipywidgets ------------
@pytest.mark.parametrize("job", ["compute", "io", "cluster"])
def test_progress_moves_with_the_first_finished_call(
    job: str, request: pytest.FixtureRequest
) -> None:
    def nap(x: int) -> int:
        time.sleep(0.01)
        return x

    def chunks(report: Any) -> int:
        return sum(s.chunks for s in report.per_worker.values())

    rec = Recorder()
    f = on(job, request, progress=rec)(nap)
    results, shown = f.report(range(300))
    assert results == list(range(300))
    # The first chunks are 1, 2, 4, ... calls: the first update reports one or two calls,
    # not a whole chunk of 300 / (workers x chunks per worker).
    assert rec.seen[0][0] <= 2
    assert rec.seen[-1] == (300, 300)
    # Without a display the chunks are as before (few and big); the ramp adds only a few.
    results, plain = on(job, request)(nap).report(range(300))
    assert results == list(range(300)) and chunks(plain) <= 40
    assert chunks(plain) < chunks(shown) <= chunks(plain) + 9


_NOTEBOOK_SCRIPT = """
import sys, types, warnings
# What a Jupyter kernel looks like to tqdm (its modules), and no ipywidgets installed.
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
ipython = types.ModuleType("IPython")
ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()
sys.modules["IPython"] = ipython
sys.modules["ipywidgets"] = None  # import ipywidgets -> ImportError
caught = warnings.catch_warnings(record=True)
seen = caught.__enter__()
warnings.simplefilter("always")
from just_distribute import distribute

def half(x: int) -> float:
    return x / 2

if __name__ == "__main__":
    if sys.argv[1] == "tqdm.auto":  # the control: tqdm itself warns in this setting
        import tqdm.auto
    else:
        print(distribute(job="io", workers=2, progress=True)(half)(range(20))[-1])
    print(" ".join(type(w.message).__name__ for w in seen) or "no warning")
"""


def test_no_warning_in_a_notebook_without_ipywidgets(tmp_path: Path) -> None:
    script = tmp_path / "notebook_like.py"
    script.write_text(_NOTEBOOK_SCRIPT)
    control = subprocess.run(
        [sys.executable, str(script), "tqdm.auto"], capture_output=True, text=True, timeout=60
    )
    assert control.stdout.split() == ["TqdmWarning"]  # the setting is one where tqdm warns
    ours = subprocess.run(
        [sys.executable, str(script), "ours"], capture_output=True, text=True, timeout=60
    )
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.splitlines() == ["9.5", "no warning"]
    assert "Warning" not in ours.stderr and "20/20" in ours.stderr  # a quiet text bar


def test_the_notebook_extra_brings_ipywidgets() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ipywidgets") for req in extras["notebook"])
