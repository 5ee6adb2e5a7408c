"""compute_this: the lazy single call, on the function service, the embedded cluster and
local jobs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from fixtures_cluster import EMBEDDED_WORKERS

from just_distribute import CallTimeoutError, compute_this, distribute
from just_distribute.tasks import LazyCall


def test_the_issue_example_on_the_service(
    cluster_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUST_DISTRIBUTE_ADDRESS", cluster_address)

    @compute_this()
    def func(x):  # type: ignore[no-untyped-def]
        time.sleep(x)
        return x * x

    call = func(0.2)
    assert isinstance(call, LazyCall) and "func(0.2)" in repr(call)
    assert call.run() == pytest.approx(0.04)
    assert func(0.3).compute() == pytest.approx(0.09)


def test_bare_and_lambda_forms(cluster_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUST_DISTRIBUTE_ADDRESS", cluster_address)

    @compute_this
    def neg(x: int) -> int:
        return -x

    assert neg(4).run(timeout=60) == -4
    assert neg.__name__ == "neg"
    add_one = compute_this(address=cluster_address)(lambda x: x + 1)
    assert add_one(41).run(timeout=60) == 42
    assert compute_this(lambda x, y=2: x * y)(21).compute() == 42


def test_bad_arguments_fail_before_anything_is_sent() -> None:
    # Nothing listens at this address: a round trip would fail differently, and slowly.
    @compute_this(address="tcp://127.0.0.1:9", connect_timeout=30)
    def two(a: int, b: int) -> int:
        return a + b

    started = time.monotonic()
    with pytest.raises(TypeError, match="two"):
        two(1)
    with pytest.raises(TypeError):
        two(1, 2, 3)
    with pytest.raises(TypeError):
        two(1, c=2)  # type: ignore[call-arg]
    assert time.monotonic() - started < 5  # no connection attempt of 30 s was made


def test_run_with_a_timeout(cluster_address: str) -> None:
    slow = compute_this(address=cluster_address)(lambda s: time.sleep(s))
    with pytest.raises(CallTimeoutError, match=r"timeout=0\.3") as info:
        slow(3).run(timeout=0.3)
    assert isinstance(info.value, TimeoutError)


def test_submit_returns_a_future_at_once(cluster_address: str) -> None:
    def slow_square(x: int) -> int:
        time.sleep(0.3)
        return x * x

    lazy = compute_this(address=cluster_address)(slow_square)
    called = threading.Event()
    future = lazy(6).submit()
    assert isinstance(future, Future)
    future.add_done_callback(lambda f: called.set())
    assert future.result(timeout=60) == 36
    assert future.done() and called.wait(10)
    # The decorator's own submit: one plain call of the function on its job.
    f = distribute(job="cluster", address=cluster_address)(slow_square)
    assert f.submit(5).result(timeout=60) == 25


def test_errors_come_back_as_themselves(cluster_address: str) -> None:
    def broken(x: int) -> int:
        raise KeyError(f"missing {x}")

    with pytest.raises(KeyError, match="missing 3") as info:
        compute_this(address=cluster_address)(broken)(3).run()
    assert "broken" in str(info.value.__cause__)


def test_identical_calls_both_run(cluster_address: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"

    def record(x: int) -> int:
        with log.open("a") as out:
            out.write(f"{x}\n")
        return x

    lazy = compute_this(address=cluster_address)(record)
    futures = [lazy(1).submit(), lazy(1).submit()]
    assert [f.result(timeout=60) for f in futures] == [1, 1]
    assert log.read_text().split() == ["1", "1"]


def test_on_the_embedded_cluster() -> None:
    lazy = compute_this(workers=EMBEDDED_WORKERS)(lambda a, b=10: a * b)
    assert lazy(4).run(timeout=120) == 40
    assert lazy(4, b=3).compute() == 12


def test_other_jobs() -> None:
    assert compute_this(job="io")(lambda: threading.current_thread().name)().run() != (
        threading.current_thread().name
    )
    assert compute_this(job="serial")(lambda x: x - 1)(1).run() == 0


def test_bad_options_fail_at_decoration() -> None:
    with pytest.raises(ValueError):
        compute_this(job="ray")
    with pytest.raises(TypeError):
        compute_this(42)  # type: ignore[call-overload]
