"""The prose of the docs, held to its word: one test per stated guarantee.

Each test is named after the page and line that states a default, a bound, an exit code or
an error type, and starts by checking that the page still says it (:func:`says`): when the
words change or go, the test fails and names the page, so that words and test are updated
together. Words that merely move (a paragraph added above them) do not fail it. The
examples on the pages run in ``test_docs.py``; these tests check what the sentences promise.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import distributed
import psutil
import pytest
from light_calls import sleep_for
from test_docs import clean_env

import just_distribute as jd
from just_distribute import Pool, compute_this, config, distribute, register_executor
from just_distribute.cli import build_parser
from just_distribute.config import Options, resolve_options, usable_cpus
from just_distribute.errors import (
    CallTimeoutError,
    ClusterUnreachableError,
    JustDistributeError,
    MissingExtraError,
    ReceiveError,
    SendError,
    VersionMismatchError,
    WorkerLostError,
)
from just_distribute.executors.cluster import SCATTER_BYTES

DOCS = Path(__file__).resolve().parent.parent / "docs"
CPUS = usable_cpus()


def says(page: str, line: int, text: str) -> None:
    """Fail unless ``docs/page`` still says ``text`` (written at line ``line``)."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    assert any(text in ln for ln in lines), (
        f"docs/{page} (line {line} when this test was written) no longer says {text!r}: "
        f"change this test with the words"
    )


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "just_distribute", *args], capture_output=True, text=True,
        timeout=timeout, env=clean_env(),
    )


# -- functions the worker processes import from this module ------------------------------
def square(x: int) -> int:
    return x * x


def pid_of(_: int) -> int:
    return os.getpid()


def exit_on_three(x: int) -> int:
    if x == 3:
        os._exit(3)
    return x


def raise_value_error(x: int) -> int:
    raise ValueError("bad", x)


def give_a_lock(_: int) -> Any:
    return threading.Lock()


@distribute(job="compute", workers=2)
def inner_compute(x: int) -> int:
    return os.getpid()


@distribute(job="io", workers=2)
def inner_io(x: int) -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


def outer_same_job(x: int) -> tuple[int, list[int]]:
    return os.getpid(), inner_compute([x, x])


def outer_other_job(x: int) -> tuple[int, list[tuple[int, str]]]:
    return os.getpid(), inner_io([x, x])


# == guide/jobs.md =========================================================================
def test_guide_jobs_md_L9_compute_default_workers_is_usable_cpus() -> None:
    says("guide/jobs.md", 9, "usable CPUs")
    _, report = distribute(job="compute")(square).report([3])
    assert report.workers == CPUS


@pytest.mark.parametrize(
    ("line", "job", "text", "expected"),
    [
        (10, "io", "`min(32, cpus + 4)`", min(32, CPUS + 4)),
        (11, "web", "| 64 |", 64),
        (13, "serial", "| 1 |", 1),
    ],
)
def test_guide_jobs_md_L10_L11_L13_default_workers_of_io_web_serial(
    line: int, job: str, text: str, expected: int
) -> None:
    says("guide/jobs.md", line, text)
    _, report = distribute(job=job)(square).report([3])
    assert report.workers == expected


def test_guide_jobs_md_L12_cluster_default_workers_are_the_clusters(cluster_address: str) -> None:
    says("guide/jobs.md", 12, "the cluster's")
    with distributed.Client(cluster_address, set_as_default=False, timeout=30) as client:
        count = len(client.scheduler_info()["workers"])
    _, report = distribute(job="cluster", address=cluster_address)(square).report([3])
    assert report.workers == count


def test_guide_jobs_md_L40_a_worker_process_starts_when_first_given_work() -> None:
    says("guide/jobs.md", 40, "starts at most 3")
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    pids = distribute(job="compute", workers=7)(pid_of)([0, 1, 2])
    started = {p.pid for p in me.children()} - before
    assert set(pids) <= started and 1 <= len(started) <= 3


def test_guide_jobs_md_L125_connect_timeout_default_10_and_connection_error_names_address() -> (
    None
):
    says("guide/jobs.md", 125, "(10 by default)")
    assert Options().connect_timeout == 10.0
    f = distribute(job="cluster", address="tcp://127.0.0.1:9", connect_timeout=1)(square)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        f([1])
    assert time.monotonic() - started < 10  # within about connect_timeout: no hang


def test_guide_jobs_md_L195_a_nested_call_on_the_same_job_runs_inside_the_worker() -> None:
    says("guide/jobs.md", 195, "runs serially, inside the worker")
    outer = distribute(job="compute", workers=2)(outer_same_job)
    for pid, inner in outer([1, 2]):
        assert inner == [pid, pid]


def test_guide_jobs_md_L200_io_inside_compute_runs_on_a_thread_pool_in_the_worker() -> None:
    says("guide/jobs.md", 200, "io inside compute runs on a thread pool")
    outer = distribute(job="compute", workers=2)(outer_other_job)
    for pid, inner in outer([1, 2]):
        assert [p for p, _ in inner] == [pid, pid]  # in the compute worker's process
        assert all(name != "MainThread" for _, name in inner)  # on its threads


# == guide/arguments.md ====================================================================
def total(numbers: list[int]) -> int:
    return sum(numbers)


def add(x: int, y: int) -> int:
    return x + y


def test_guide_arguments_md_L19_autobatch_is_on_by_default() -> None:
    says("guide/arguments.md", 19, "(`autobatch=True`, the default)")
    assert Options().autobatch is True
    assert distribute(job="io", workers=2)(total)(list(range(10))) == [10, 35]


def test_guide_arguments_md_L80_batch_sizes_differ_by_at_most_one() -> None:
    says("guide/arguments.md", 80, "differing by at most one")
    def size(numbers: list[int]) -> int:
        return len(numbers)

    assert distribute(job="io", workers=2, batches=3)(size)(list(range(10))) == [4, 3, 3]


def test_guide_arguments_md_L81_one_batch_per_worker_by_default() -> None:
    says("guide/arguments.md", 81, "one batch per worker")
    assert len(distribute(job="io", workers=3)(total)(list(range(100)))) == 3


def test_guide_arguments_md_L128_a_mix_of_batches_and_elements_is_refused() -> None:
    says("guide/arguments.md", 128, "mixes batches and other items is refused")
    with pytest.raises(TypeError, match="'numbers'"):
        distribute(job="io", workers=2)(total)([[1], 2])


def test_guide_arguments_md_L185_a_call_that_does_not_bind_raises_TypeError() -> None:
    says("guide/arguments.md", 185, "`TypeError`, as the plain function would")
    with pytest.raises(TypeError, match="add"):
        distribute(job="io")(add)([1], [2], [3])


def test_guide_arguments_md_L186_not_iterable_raises_TypeError_naming_it() -> None:
    says("guide/arguments.md", 186, "`TypeError` naming the parameter")
    with pytest.raises(TypeError, match=r"'x'.*by keyword \(x=\.\.\.\)"):
        distribute(job="io")(add)(1, [1, 2])


def test_guide_arguments_md_L187_lengths_raise_ValueError_listing_each() -> None:
    says("guide/arguments.md", 187, "`ValueError` listing every parameter with its length")
    with pytest.raises(ValueError, match="'x' with 3, 'y' with 2"):
        distribute(job="io")(add)([1, 2, 3], [1, 2])


def test_guide_arguments_md_L188_batch_length_not_a_multiple_raises_ValueError() -> None:
    says("guide/arguments.md", 188, "`ValueError` with the lengths and the rule")

    def scaled(numbers: list[int], k: int) -> int:
        return k * sum(numbers)

    with pytest.raises(ValueError, match=r"multiple of 2.*'numbers' with 3"):
        distribute(job="io")(scaled)([1, 2, 3], [1, 2])


def test_guide_arguments_md_L189_no_positional_argument_raises_TypeError() -> None:
    says("guide/arguments.md", 189, "no positional argument at all")
    with pytest.raises(TypeError, match=r"\.submit"):
        distribute(job="io")(add)(x=1, y=2)


def test_guide_arguments_md_L190_a_single_str_raises_TypeError() -> None:
    says("guide/arguments.md", 190, "split into characters")
    with pytest.raises(TypeError, match="split into characters"):
        distribute(job="io")(add)("abc", [1, 2, 3])


def test_guide_arguments_md_L191_a_single_mapping_raises_TypeError_with_the_fixes() -> None:
    says("guide/arguments.md", 191, "split into its keys")

    def size(d: dict[str, int]) -> int:
        return len(d)

    with pytest.raises(TypeError, match=r"split into its keys.*list\(d\.items\(\)\).*d=\.\.\."):
        distribute(job="io")(size)({"a": 1, "b": 2})


def test_guide_arguments_md_L217_empty_input_starts_no_pool() -> None:
    says("guide/arguments.md", 217, "no pool started")
    made: list[Options] = []

    def factory(options: Options) -> Any:
        from just_distribute.executors.futures import FuturesExecutor

        made.append(options)
        return FuturesExecutor(ThreadPoolExecutor(max_workers=1))

    register_executor("claims-counting", factory, default_workers=lambda: 1)
    f = distribute(job="claims-counting")(add)
    assert f([], []) == [] and made == []
    assert f([1], [2]) == [3] and len(made) == 1


# == guide/errors.md =======================================================================
def test_guide_errors_md_L41_iter_keeps_2_chunks_per_worker_in_flight() -> None:
    says("guide/errors.md", 41, "2 per")
    pulled: list[int] = []

    def source() -> Iterator[float]:
        for i in range(1000):
            pulled.append(i)
            yield 0.05

    stream = distribute(job="io", workers=2, chunksize=1)(sleep_for).iter(source())
    assert next(stream) == 0.05
    # 2 workers x 2 chunks of 1 call (and the one being yielded) were pulled, not 1000.
    assert len(pulled) <= 2 * 2 + 2
    stream.close()


def test_guide_errors_md_L46_a_builtin_exception_arrives_with_its_type_and_arguments() -> None:
    says("guide/errors.md", 46, "reaches the caller as **the same exception**")
    with pytest.raises(ValueError) as info:
        distribute(job="compute", workers=2)(raise_value_error)([7])
    assert info.value.args == ("bad", 7)
    assert "return" not in str(info.value) and info.value.__cause__ is not None


def test_guide_errors_md_L95_retry_on_defaults_to_any_exception() -> None:
    says("guide/errors.md", 95, "(default: any `Exception`)")
    assert Options().retry_on == (Exception,)
    tries: list[int] = []

    def flaky(x: int) -> int:
        tries.append(x)
        if len(tries) == 1:
            raise KeyError(x)
        return x

    assert distribute(job="io", workers=1, retries=1)(flaky)([5]) == [5] and tries == [5, 5]


def test_guide_errors_md_L96_backoff_doubles_before_each_retry() -> None:
    says("guide/errors.md", 96, "doubling each time")
    stamps: list[float] = []

    def always(x: int) -> int:
        stamps.append(time.monotonic())
        raise ConnectionError("down")

    f = distribute(job="io", workers=1, retries=2, backoff=0.2)(always)
    with pytest.raises(ConnectionError):
        f([1])
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 2 and gaps[0] >= 0.2 and gaps[1] >= 0.4


@pytest.mark.parametrize("job", ["compute", "io", "web"])
def test_guide_errors_md_L120_timeout_raises_CallTimeoutError_a_TimeoutError(job: str) -> None:
    says("guide/errors.md", 120, "`CallTimeoutError` (a subclass of the built-in `TimeoutError`)")
    f = distribute(job=job, workers=2, timeout=0.5)(sleep_for)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        f([0.01, 3.0])
    assert isinstance(info.value, CallTimeoutError)
    assert "call 1" in str(info.value) + "".join(info.value.__notes__)
    # io and web: the error at once, not after the call (guide/errors.md:145).
    assert time.monotonic() - started < 2.5


def test_guide_errors_md_L143_on_compute_a_timed_out_worker_is_killed() -> None:
    says("guide/errors.md", 143, "the worker process is killed and replaced")

    def pid_then_sleep(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    f = distribute(job="compute", workers=1, timeout=0.5)(pid_then_sleep)
    first = f([0.0])[0]
    with pytest.raises(CallTimeoutError):
        f([5.0])
    deadline = time.monotonic() + 5
    while psutil.pid_exists(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"
    assert f([0.0])[0] != first  # replaced


def spin_until_interrupted(seconds: float, *, marker: str) -> float:
    """Python code busy for ``seconds``; leaves ``marker`` when interrupted."""
    try:
        end = time.time() + seconds
        # Not `while time.time() < end`: on 3.13 an interrupt that lands in a loop's
        # condition skips the frame's except and finally (CPython issue 130279).
        while True:
            if time.time() >= end:
                break
    except KeyboardInterrupt:
        Path(marker).touch()
        raise
    return seconds


def test_guide_errors_md_L145_on_the_cluster_a_timed_out_call_is_interrupted(
    cluster_address: str, tmp_path: Path
) -> None:
    says("guide/errors.md", 145, "0.2 s later the call is interrupted in its worker thread")
    says("guide/errors.md", 145, "A worker with several threads (a cluster of your own) is never")
    from just_distribute.executors import cluster

    assert cluster.WITHDRAW_GRACE / 5 == 0.2 and cluster._INTERRUPT_GRACE == 0.2
    marker = tmp_path / "interrupted"
    f = distribute(job="cluster", address=cluster_address, timeout=1)(spin_until_interrupted)
    with pytest.raises(CallTimeoutError):
        f([30.0], marker=str(marker))
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the timed-out call was not interrupted in its thread"
    # (the multi-thread case: tests/test_promises_runtime_cluster.py)


def test_guide_errors_md_L150_a_dead_worker_raises_WorkerLostError_with_its_exit_code() -> None:
    says("guide/errors.md", 150, "raises `WorkerLostError` naming the call")
    f = distribute(job="compute", workers=2)(exit_on_three)
    with pytest.raises(WorkerLostError) as info:
        f(range(6))
    assert info.value.exitcode == 3 and "call 3" in "".join(info.value.__notes__)
    assert f([1, 2]) == [1, 2]  # replaced: the next call works (also guide/jobs.md:62)


@pytest.mark.parametrize(
    ("line", "cls", "builtin"),
    [
        (189, WorkerLostError, None),
        (190, CallTimeoutError, TimeoutError),
        (191, SendError, TypeError),
        (192, ReceiveError, None),
        (193, ClusterUnreachableError, ConnectionError),
        (194, MissingExtraError, ImportError),
        (195, VersionMismatchError, None),
    ],
)
def test_guide_errors_md_L184_to_L195_the_exception_tree(
    line: int, cls: type[BaseException], builtin: type[BaseException] | None
) -> None:
    says("guide/errors.md", 184, "one base class, `JustDistributeError`")
    also = f"`{builtin.__name__}`" if builtin else "—"
    says("guide/errors.md", line, f"| `{cls.__name__}` | {also} |")
    assert issubclass(cls, JustDistributeError) and getattr(jd, cls.__name__) is cls
    if builtin is not None:
        assert issubclass(cls, builtin)


def test_guide_errors_md_L191_an_unpicklable_argument_raises_SendError() -> None:
    says("guide/errors.md", 191, "cannot be pickled (the message names it)")
    with pytest.raises(SendError, match="positional argument 1"):
        distribute(job="compute", workers=2)(square)([threading.Lock()])


def test_guide_errors_md_L192_an_unpicklable_result_raises_ReceiveError() -> None:
    says("guide/errors.md", 192, "a result cannot be pickled in the worker")
    with pytest.raises(ReceiveError):
        distribute(job="compute", workers=2)(give_a_lock)([1])


def test_guide_errors_md_L194_a_missing_extra_raises_MissingExtraError_with_pip_line() -> None:
    says("guide/errors.md", 194, "the message has the `pip install` line")
    code = textwrap.dedent("""
        import sys
        sys.modules["distributed"] = None  # as if the cluster extra were not installed
        from just_distribute import distribute
        try:
            distribute(job="cluster")(abs)([1])
        except ImportError as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env=clean_env(),
    )
    assert out.stdout.startswith("MissingExtraError") and "pip install" in out.stdout


# == guide/configuration.md ================================================================
_DEFAULTS = {
    18: ("job", "compute"), 20: ("address", None), 21: ("autobatch", True),
    22: ("batches", None), 23: ("flatten", False), 24: ("chunksize", None),
    25: ("max_in_flight", None), 26: ("timeout", None), 28: ("on_error", "raise"),
    29: ("progress", False), 30: ("checkpoint", None), 32: ("connect_timeout", 10.0),
    33: ("tls", None),
}


@pytest.mark.parametrize("line", sorted(_DEFAULTS))
def test_guide_configuration_md_L18_to_L33_option_defaults(line: int) -> None:
    name, value = _DEFAULTS[line]
    says("guide/configuration.md", line, f"| `{name}` |")
    assert getattr(Options(), name) == value


def test_guide_configuration_md_L27_L31_retry_and_initializer_defaults() -> None:
    says("guide/configuration.md", 27, "`0`, `(Exception,)`, `0.0`")
    says("guide/configuration.md", 31, "`None`, `()`")
    o = Options()
    assert (o.retries, o.retry_on, o.backoff) == (0, (Exception,), 0.0)
    assert (o.initializer, o.initargs) == (None, ())


def test_guide_configuration_md_L25_max_in_flight_is_2_per_worker_1_on_serial() -> None:
    says("guide/configuration.md", 25, "2 per worker (1 on `serial`)")
    from just_distribute.executors import executor_for

    for job, per_worker in [("compute", 2), ("io", 2), ("web", 2), ("serial", 1)]:
        ex, _ = executor_for(resolve_options({"job": job, "workers": 2}))
        assert ex.in_flight_per_worker == per_worker


def test_guide_configuration_md_L35_a_misspelt_option_or_bad_value_fails_at_once() -> None:
    says("guide/configuration.md", 35, "A misspelt option fails at once")
    with pytest.raises(TypeError, match="valid options are"):
        distribute(job="io", wokers=2)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="workers"):
        distribute(job="io", workers=0)


def test_guide_configuration_md_L90_an_unparsable_variable_raises_ValueError_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    says("guide/configuration.md", 90, "raises a `ValueError` naming the")
    monkeypatch.setenv("JUST_DISTRIBUTE_WORKERS", "many")
    with pytest.raises(ValueError, match="JUST_DISTRIBUTE_WORKERS='many'"):
        distribute(job="io")(square)([1])


def test_guide_configuration_md_L92_the_variable_is_not_read_when_set_higher_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    says("guide/configuration.md", 92, "then the variable is not read at all")
    monkeypatch.setenv("JUST_DISTRIBUTE_WORKERS", "many")
    assert distribute(job="io", workers=2)(square)([1, 2]) == [1, 4]
    with config(workers=2):
        assert distribute(job="io")(square)([3]) == [9]


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE"])
def test_guide_configuration_md_L84_progress_variable_spellings(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    says("guide/configuration.md", 84, "`1` (also `true`, `yes`, `on`)")
    monkeypatch.setenv("JUST_DISTRIBUTE_PROGRESS", raw)
    assert resolve_options({}).progress is True
    monkeypatch.setenv("JUST_DISTRIBUTE_PROGRESS", "0")
    assert resolve_options({}).progress is False


def test_guide_configuration_md_L11_serial_from_the_environment_beats_the_decorator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    says("guide/configuration.md", 11, "**forces** every decorated function to run serially")
    monkeypatch.setenv("JUST_DISTRIBUTE_JOB", "serial")
    me = threading.current_thread().name

    def where(_: int) -> str:
        return threading.current_thread().name

    assert distribute(job="io", workers=4)(where)(range(3)) == [me] * 3


_QUIET = """
import time
from just_distribute import distribute

def flaky(x: int) -> int:
    raise ConnectionError("down")

def slow(x: float) -> float:
    time.sleep(x)
    return x

if __name__ == "__main__":
    results = distribute(job="io", workers=2, retries=2, on_error="return")(flaky)([1, 2])
    assert all(isinstance(r, ConnectionError) for r in results)
    try:
        distribute(job="io", workers=2, timeout=0.2)(slow)([0.0, 2.0])
    except TimeoutError:
        pass
    print("done")
"""


def test_guide_configuration_md_L107_retries_and_timeouts_print_nothing_by_themselves(
    tmp_path: Path,
) -> None:
    says("guide/configuration.md", 107, "just_distribute prints nothing by itself")
    script = tmp_path / "quiet.py"
    script.write_text(_QUIET)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60,
        env=clean_env(),
    )
    # No logging configured: the library's NullHandler keeps Python's last-resort handler
    # from printing its WARNING records (the retries and the timeout) to standard error.
    assert (out.returncode, out.stdout, out.stderr) == (0, "done\n", "")


# == guide/cli.md ==========================================================================
@pytest.fixture(scope="module")
def service_run() -> tuple[str, int]:
    """``just-distribute cluster`` with default options, then Ctrl-C: output, exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "just_distribute", "cluster", "--port", "0",
         "--dashboard-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        lines.append(line)
        if "service ready" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return "".join(lines), code


def test_guide_cli_md_L38_cluster_workers_default_to_usable_cpus(
    service_run: tuple[str, int],
) -> None:
    says("guide/cli.md", 38, "| `--workers N` | usable CPUs |")
    assert f"workers: {CPUS} processes x 1 thread" in service_run[0]


def test_guide_cli_md_L39_the_service_listens_on_loopback_by_default(
    service_run: tuple[str, int],
) -> None:
    says("guide/cli.md", 39, "| `--host HOST` | `127.0.0.1` |")
    says("recipes/cluster.md", 53, "By default it listens")
    assert "scheduler: tcp://127.0.0.1:" in service_run[0]


def test_guide_cli_md_L129_the_service_stopped_by_ctrl_c_exits_130(
    service_run: tuple[str, int],
) -> None:
    says("guide/cli.md", 129, "`cluster` and `worker` included")
    assert service_run[1] == 130


def test_guide_cli_md_L129_ctrl_c_in_the_demo_exits_130() -> None:
    says("guide/cli.md", 129, "`130` when Ctrl-C interrupts any command")
    proc = subprocess.Popen(
        [sys.executable, "-m", "just_distribute", "demo", "--no-cluster", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    time.sleep(3)  # well inside the demo's first workloads
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 130


def test_guide_cli_md_L133_a_failure_exits_non_zero_with_a_message() -> None:
    says("guide/cli.md", 133, "with a message on standard error when something failed")
    out = run_cli("loadtest", "--duration", "-1")
    assert out.returncode not in (0, 130) and "--duration" in out.stderr
    assert run_cli("cluster", "--help").returncode == 0


def _defaults(command: str, *extra: str) -> Any:
    return build_parser().parse_args([command, *extra])


@pytest.mark.parametrize(
    ("line", "text", "attr", "value"),
    [
        (40, "| `--port PORT` | `8786` |", "port", 8786),
        (41, "| `--dashboard-port PORT` | `8787` |", "dashboard_port", 8787),
        (43, "| `--tls-dir DIR` | `just-distribute-tls` |", "tls_dir", "just-distribute-tls"),
    ],
)
def test_guide_cli_md_L40_L41_L43_cluster_option_defaults(
    line: int, text: str, attr: str, value: Any
) -> None:
    says("guide/cli.md", line, text)
    assert getattr(_defaults("cluster"), attr) == value


@pytest.mark.parametrize(
    ("line", "text", "attr", "value"),
    [
        (91, "`50,200,1000`", "tasks", [50, 200, 1000]),
        (92, "`0.05`", "duration", 0.05),
        (93, "`sleep`", "kind", "sleep"),
        (94, "`loadtest-out`", "out", Path("loadtest-out")),
        (96, "`10`", "connect_timeout", 10.0),
    ],
)
def test_guide_cli_md_L91_to_L96_loadtest_option_defaults(
    line: int, text: str, attr: str, value: Any
) -> None:
    says("guide/cli.md", line, text)
    assert getattr(_defaults("loadtest"), attr) == value


def test_guide_cli_md_L90_loadtest_workers_default_1_2_4() -> None:
    says("guide/cli.md", 90, "`1,2,4`")
    import inspect

    from just_distribute.loadtest import run

    assert _defaults("loadtest").workers is None  # resolved by the run:
    assert "workers or (1, 2, 4)" in inspect.getsource(run.run_loadtest)


# == recipes ===============================================================================
def test_recipes_cluster_md_L32_functions_from_16_KiB_on_are_sent_once() -> None:
    says("recipes/cluster.md", 32, "16 KiB or more")
    # The bytes on the wire are counted in test_cluster.py (a 60 KB function, 8 chunks).
    assert SCATTER_BYTES == 16 * 1024


def test_recipes_cluster_md_L94_an_unreachable_address_raises_within_connect_timeout() -> None:
    says("recipes/cluster.md", 94, "raises `ClusterUnreachableError` (a `ConnectionError`)")
    says("recipes/cluster.md", 95, "within `connect_timeout` seconds (10 by default)")
    f = distribute(job="cluster", address="tcp://127.0.0.1:9", connect_timeout=1)(square)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match=r"127\.0\.0\.1:9"):
        f([1])
    assert time.monotonic() - started < 6


def test_recipes_cluster_md_L347_a_bad_lazy_call_raises_TypeError_before_sending() -> None:
    says("recipes/cluster.md", 347, "except TypeError:")

    @compute_this(job="serial")
    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError):
        two(1)  # type: ignore[call-arg]


def test_recipes_cluster_md_L354_run_timeout_bounds_the_wait(cluster_address: str) -> None:
    says("recipes/cluster.md", 354, "`.run(timeout=...)`")
    lazy = compute_this(job="cluster", address=cluster_address)(sleep_for)
    started = time.monotonic()
    with pytest.raises(CallTimeoutError):
        lazy(3.0).run(timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_recipes_files_md_L84_io_default_is_that_of_ThreadPoolExecutor() -> None:
    says("recipes/files.md", 84, "`min(32, cpus + 4)`, the same as `ThreadPoolExecutor`")
    with ThreadPoolExecutor() as pool:
        expected = pool._max_workers
    _, report = distribute(job="io")(square).report([1])
    assert report.workers == min(32, CPUS + 4) == expected


def test_recipes_migrating_md_L28_a_dead_pool_worker_raises_WorkerLostError() -> None:
    says("recipes/migrating.md", 28, "the out-of-memory killer leaves `map` waiting forever")
    with Pool(2) as pool:
        with pytest.raises(WorkerLostError):
            pool.map(exit_on_three, range(6))
        assert pool.map(square, range(3)) == [0, 1, 4]  # the worker was replaced


def test_recipes_migrating_md_L34_imap_keeps_a_bounded_number_in_flight() -> None:
    says("recipes/migrating.md", 34, "stream with a bounded number of calls in flight")
    pulled: list[int] = []

    def source() -> Iterator[float]:
        for i in range(1000):
            pulled.append(i)
            yield 0.05

    with Pool(2, job="io") as pool:
        stream = pool.imap(sleep_for, source(), chunksize=1)
        assert next(stream) == 0.05
        assert len(pulled) <= 10
        del stream


def test_recipes_migrating_md_L55_maxtasksperchild_replaces_the_worker() -> None:
    says("recipes/migrating.md", 55, "replaces a compute worker process after that many tasks")
    with Pool(1, maxtasksperchild=1) as pool:
        pids = pool.map(pid_of, range(3), chunksize=1)
    assert len(set(pids)) == 3


def test_recipes_migrating_md_L124_job_ray_raises_ValueError_pointing_to_cluster() -> None:
    says("recipes/migrating.md", 124, "except ValueError as exc:")
    with pytest.raises(ValueError, match='job="cluster"'):
        distribute(job="ray")


def test_recipes_progress_md_L36_total_is_None_for_an_input_of_unknown_length() -> None:
    says("recipes/progress.md", 36, "(`total` is `None` when the input's length is unknown")
    seen: list[tuple[int, int | None]] = []
    f = distribute(job="io", workers=2, progress=lambda d, t: seen.append((d, t)))(square)
    assert list(f.iter(x for x in range(10))) == [x * x for x in range(10)]
    assert seen and all(t is None for _, t in seen) and seen[-1][0] == 10


def test_recipes_progress_md_L11_a_running_chunk_reports_at_most_every_tenth_of_a_second() -> None:
    says("recipes/progress.md", 11, "how many of its calls are done, at most every 0.1 s")
    says("recipes/progress.md", 14, "With `chunksize=100` and calls of 20 ms, the bar moves about")
    says("recipes/progress.md", 16, "does not count them twice")
    from just_distribute.executors.chunk import TICK_SECONDS

    assert TICK_SECONDS == 0.1
    seen: list[int] = []

    def nap(x: int) -> int:
        time.sleep(0.02)
        return x

    f = distribute(job="io", workers=2, chunksize=100, progress=lambda d, t: seen.append(d))(nap)
    assert f(range(300)) == list(range(300))
    assert seen[0] < 100 and seen[-1] == 300 and max(seen) == 300
    assert len(seen) > 6  # well more than once per chunk of 100


# == guide/executors.md ====================================================================
@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        (71, "remote", False),
        (72, "chunks_per_worker", 4),
        (73, "in_flight_per_worker", 2),
        (74, "target_chunk_seconds", 0.02),
        (75, "awaits_coroutines", False),
        (76, "native_initializer", False),
        (77, "recycles_workers", False),
        (78, "runs_inline", False),
    ],
)
def test_guide_executors_md_L71_to_L78_capability_defaults(
    line: int, attr: str, value: Any
) -> None:
    from just_distribute.executors.base import Executor

    says("guide/executors.md", line, f"| `{attr}` | ")
    shown = f"`{value}`" if isinstance(value, bool) else f"| {value} |"
    says("guide/executors.md", line, shown)
    assert getattr(Executor, attr) == value
