"""The core promises of ``@distribute``: the snippets of the guide, the decorated object,
pools that start once, errors that reach the caller, and clean exits."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from just_distribute import Distributed, RemoteTraceback, distribute

ROOT = Path(__file__).resolve().parents[1]


# -- module-level functions: importable by worker processes ------------------------------
@distribute(job="compute", workers=8)
def f(x: int, y: int) -> int:
    """Multiply two numbers."""
    return x * y


@distribute(job="compute", workers=8)
def total(numbers: list[int]) -> int:
    return sum(numbers)


@distribute(job="compute", workers=8)
def g(numbers: list[int], power: int, verbose: bool = True) -> tuple[str, list[int], int, bool]:
    return type(numbers).__name__, numbers, power, verbose


@distribute(job="compute", workers=8, autobatch=False)
def h(numbers1: list[int], numbers2: list[int]) -> tuple[int, int]:
    return sum(numbers1), sum(numbers2)


@distribute(job="compute", workers=2)
def square(x: int) -> int:
    return x * x


@distribute(job="compute", workers=2)
def apply_inside(x: int, *, fn: Any) -> tuple[bool, int]:
    # ``fn`` arrives as the plain function: calling it runs here, no pool inside the worker.
    return isinstance(fn, Distributed), fn(x)


@distribute(job="compute", workers=2)
def pid_of(x: int) -> int:
    return os.getpid()


class Scaler:
    """A class whose method is distributed: the instance travels as a constant."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @distribute(job="compute", workers=2)
    def scale(self, x: int) -> int:
        """Scale ``x``."""
        return x * self.factor

    @distribute(job="io", workers=2)
    def scale_io(self, x: int) -> tuple[int, int]:
        return id(self), x * self.factor


# -- the snippets of the issue, as written -------------------------------------------------
def test_f_elements_in_input_order() -> None:
    out = f(range(1000), range(4000, 2000, -2))
    assert out == [x * y for x, y in zip(range(1000), range(4000, 2000, -2), strict=True)]


def test_save_str_and_bytes_are_elements() -> None:
    seen: list[tuple[bytes, str, bool]] = []
    lock = threading.Lock()

    @distribute(job="io", workers=8)
    def save(data_to_write: bytes, filename: str, verbose: bool = True) -> int:
        with lock:
            seen.append((data_to_write, filename, verbose))
        return len(data_to_write)

    store = {f"file{i}.bin": bytes(range(i % 7 + 1)) for i in range(50)}
    assert save(store.values(), store.keys(), verbose=False) == [len(v) for v in store.values()]
    assert sorted(seen) == sorted((v, k, False) for k, v in store.items())


def test_total_autobatch() -> None:
    data = list(range(100_000))
    out = total(data)
    assert 1 < len(out) <= 8
    assert sum(out) == sum(range(100_000))
    assert total.__wrapped__([1, 2, 3]) == 6


def test_total_batches_contiguous_sizes_differ_by_at_most_one() -> None:
    @distribute(job="compute", workers=8)
    def echo(numbers: list[int]) -> list[int]:
        return numbers

    data = list(range(100_003))
    batches = echo(data)
    assert all(type(b) is list for b in batches)
    assert [x for b in batches for x in b] == data
    sizes = {len(b) for b in batches}
    assert max(sizes) - min(sizes) <= 1


def test_g_batch_and_element_together() -> None:
    numbers = list(range(1000)) * 100
    out = g(numbers, range(100), verbose=False)
    assert len(out) == 100
    for j, (kind, batch, power, verbose) in enumerate(out):
        assert kind == "list"
        assert batch == numbers[1000 * j : 1000 * (j + 1)]
        assert power == j and type(power) is int
        assert verbose is False


def test_h_ready_made_batches() -> None:
    a = [[1, 2], [3], [4, 5, 6]]
    b = [[10], [20, 30], []]
    assert h(a, b) == [(3, 10), (3, 50), (15, 0)]


def test_flatten_concatenates_batch_results() -> None:
    @distribute(job="compute", workers=3, flatten=True)
    def double(numbers: list[int]) -> list[int]:
        return [2 * n for n in numbers]

    assert double(list(range(101))) == [2 * n for n in range(101)]


# -- the decorated object ------------------------------------------------------------------
def test_keeps_name_doc_wrapped() -> None:
    assert f.__name__ == "f"
    assert f.__doc__ == "Multiply two numbers."
    assert f.__wrapped__(3, 4) == 12
    assert not isinstance(f.__wrapped__, Distributed)


def test_pickles_as_the_original_function() -> None:
    again = pickle.loads(pickle.dumps(f))
    assert again is f.__wrapped__
    assert again(2, 5) == 10


def test_decorated_function_sent_to_a_worker_does_not_recurse() -> None:
    out = apply_inside(range(6), fn=square)
    assert out == [(False, x * x) for x in range(6)]


def test_method_instance_is_a_constant() -> None:
    s = Scaler(3)
    assert s.scale(range(5)) == [0, 3, 6, 9, 12]
    assert Scaler.scale.__name__ == "scale"
    assert s.scale_io(range(4)) == [(id(s), 3 * x) for x in range(4)]


def test_lambdas_and_closures_on_compute() -> None:
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    assert distribute(job="compute", workers=2)(lambda x: x * 3)(range(5)) == [0, 3, 6, 9, 12]
    assert distribute(job="compute", workers=2)(closure)(range(3)) == [100, 101, 102]


def _run_script(code: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
        env=env, cwd=tmp_path,
    )


def test_functions_defined_in_main_run_on_compute(tmp_path: Path) -> None:
    done = _run_script(
        """
        from just_distribute import distribute

        def helper(x):
            return x + 1

        @distribute(job="compute", workers=2)
        def in_main(x: int) -> int:
            return helper(x) * 2

        if __name__ == "__main__":
            print(in_main(range(5)))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 4, 6, 8, 10]"


# -- pools ---------------------------------------------------------------------------------
def test_pool_starts_once_and_is_reused() -> None:
    me = psutil.Process()
    first = set(pid_of(range(40)))
    children = {p.pid for p in me.children()}
    assert first <= children
    second = set(pid_of(range(40)))
    assert {p.pid for p in me.children()} == children  # no process started or lost
    assert second <= children


def test_element_calls_travel_in_chunks() -> None:
    results, report = f.report(range(1000), range(1000))
    assert results == [x * x for x in range(1000)]
    chunks = sum(s.chunks for s in report.per_worker.values())
    calls = sum(s.calls for s in report.per_worker.values())
    assert calls == 1000
    assert 1 <= chunks < 100


def test_pools_shut_down_at_exit(tmp_path: Path) -> None:
    done = _run_script(
        """
        import os
        from just_distribute import distribute

        @distribute(job="compute", workers=3)
        def pid(x: int) -> int:
            return os.getpid()

        @distribute(job="io", workers=3)
        def tid(x: int) -> int:
            return x

        if __name__ == "__main__":
            print(*sorted(set(pid(range(60)))))
            tid(range(10))
        """,
        tmp_path,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert pids
    # The workers ended with their parent, not later through their orphan watchdog.
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


# -- errors --------------------------------------------------------------------------------
@distribute(job="compute", workers=2)
def fails_at_seven(x: int, *, marker_dir: str) -> int:
    Path(marker_dir, str(x)).touch()
    if x == 7:
        raise KeyError(f"bad {x}")
    import time

    time.sleep(0.002)
    return x


def test_exception_reaches_the_caller_with_traceback_and_note(tmp_path: Path) -> None:
    with pytest.raises(KeyError) as info:
        fails_at_seven(range(2000), marker_dir=str(tmp_path))
    exc = info.value
    assert exc.args == ("bad 7",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "fails_at_seven" in str(exc.__cause__) and "KeyError" in str(exc.__cause__)
    notes = getattr(exc, "__notes__", [])
    assert any("call 7" in n and "x=7" in n for n in notes), notes
    # The calls not yet run were cancelled: far fewer than 2000 ran.
    ran = len(list(tmp_path.iterdir()))
    assert ran < 2000
    # The next call works.
    assert fails_at_seven(range(5), marker_dir=str(tmp_path)) == list(range(5))


def test_exception_on_io_names_the_call_with_short_args() -> None:
    @distribute(job="io", workers=2)
    def parse(text: str) -> int:
        return int(text)

    with pytest.raises(ValueError) as info:
        parse(["1", "2", "x" * 500, "4"])
    note = " ".join(info.value.__notes__)
    assert "call 2" in note and "parse" in note
    assert len(note) < 300  # the long argument is shortened
    assert parse(["5"]) == [5]
