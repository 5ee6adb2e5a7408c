"""The generic suite: the same promises, checked on every local job."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import user_executor  # noqa: F401 - registers the job "user-processes"
from hypothesis import given, settings
from hypothesis import strategies as st

from just_distribute import distribute

# The last one is a backend written from public names only (tests/user_executor.py).
JOBS = ["compute", "io", "web", "serial", "user-processes"]


def combine(x: int, y: int, *, scale: int = 1) -> int:
    return (x * 31 + y) * scale


async def async_combine(x: int, y: int, *, scale: int = 1) -> int:
    await asyncio.sleep(0)
    return combine(x, y, scale=scale)


def batch_sum(numbers: list[int]) -> tuple[int, int, int]:
    return (numbers[0] if numbers else -1), len(numbers), sum(numbers)


def batch_and_element(numbers: list[int], power: int) -> tuple[list[int], int]:
    return numbers, power


def echo_batch(numbers: list[int]) -> list[int]:
    return numbers


def fail_on(x: int, *, bad: int) -> int:
    if x == bad:
        raise ZeroDivisionError(f"call with {x}")
    return x


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def thread_name(x: int) -> str:
    return threading.current_thread().name


workers_st = st.integers(1, 3)


@pytest.mark.parametrize("job", JOBS)
@settings(max_examples=15, deadline=None)
@given(
    xs=st.lists(st.integers(-1000, 1000), max_size=60),
    workers=workers_st,
    chunksize=st.none() | st.integers(1, 7),
)
def test_elements_equal_the_serial_reference(
    job: str, xs: list[int], workers: int, chunksize: int | None
) -> None:
    ys = [x * 7 % 13 for x in xs]
    opts: dict[str, Any] = {"job": job, "workers": workers}
    if chunksize is not None:
        opts["chunksize"] = chunksize
    dist = distribute(**opts)(combine)
    expected = [combine(x, y, scale=3) for x, y in zip(xs, ys, strict=True)]
    assert dist(xs, ys, scale=3) == expected
    assert dist(iter(xs), (y for y in ys), scale=3) == expected
    if job == "web":  # coroutines on the event loop, besides plain functions in threads
        assert distribute(**opts)(async_combine)(xs, ys, scale=3) == expected


@pytest.mark.parametrize("job", JOBS)
@settings(max_examples=15, deadline=None)
@given(
    data=st.lists(st.integers(-10**6, 10**6), max_size=200),
    workers=workers_st,
    batches=st.none() | st.integers(1, 9),
)
def test_autobatch_equals_the_serial_reference(
    job: str, data: list[int], workers: int, batches: int | None
) -> None:
    opts: dict[str, Any] = {"job": job, "workers": workers}
    if batches is not None:
        opts["batches"] = batches
    out = distribute(**opts)(echo_batch)(data)
    usable = 1 if job == "serial" else workers  # serial has one worker, whatever is asked
    k = min(len(data), batches if batches is not None else usable)
    assert len(out) == k
    assert [x for b in out for x in b] == data
    if out:
        sizes = [len(b) for b in out]
        assert max(sizes) - min(sizes) <= 1
    assert distribute(**opts, flatten=True)(echo_batch)(data) == data
    sums = distribute(**opts)(batch_sum)(data)
    assert sum(s for _, _, s in sums) == sum(data)


@pytest.mark.parametrize("job", JOBS)
@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 20), per=st.integers(0, 5), workers=workers_st)
def test_batch_and_element_equal_the_serial_reference(
    job: str, k: int, per: int, workers: int
) -> None:
    numbers = list(range(k * per))
    out = distribute(job=job, workers=workers)(batch_and_element)(numbers, range(k))
    assert out == [(numbers[per * j : per * (j + 1)], j) for j in range(k)]


@pytest.mark.parametrize("job", JOBS)
def test_ready_made_batches(job: str) -> None:
    dist = distribute(job=job, workers=2, autobatch=False)(batch_sum)
    assert dist([[1, 2], [3], [4, 5, 6]]) == [(1, 2, 3), (3, 1, 3), (4, 3, 15)]


@pytest.mark.parametrize("job", JOBS)
def test_an_error_reaches_the_caller_and_the_next_call_works(job: str) -> None:
    dist = distribute(job=job, workers=2)(fail_on)
    with pytest.raises(ZeroDivisionError, match="call with 13") as info:
        dist(range(40), bad=13)
    assert any("call 13" in n and "x=13" in n for n in info.value.__notes__)
    if job == "compute":
        assert "fail_on" in str(info.value.__cause__)
    assert dist(range(40), bad=-1) == list(range(40))


@pytest.mark.parametrize("job", JOBS)
def test_empty_input(job: str) -> None:
    dist = distribute(job=job, workers=2)(combine)
    assert dist([], []) == []
    assert list(dist.iter([], [])) == []
    assert distribute(job=job, workers=2)(echo_batch)([]) == []


@pytest.mark.parametrize("job", JOBS)
def test_async_functions_run_on_every_job(job: str) -> None:
    dist = distribute(job=job, workers=3)(async_double)
    assert dist(range(30)) == [2 * x for x in range(30)]


@pytest.mark.parametrize("job", JOBS)
def test_iter_ordered_and_unordered(job: str) -> None:
    dist = distribute(job=job, workers=2, chunksize=3)(combine)
    xs = list(range(25))
    expected = [combine(x, x) for x in xs]
    assert list(dist.iter(xs, xs)) == expected
    assert sorted(dist.iter(xs, xs, ordered=False)) == sorted(expected)


@pytest.mark.parametrize("job", JOBS)
def test_awaitable_form(job: str) -> None:
    dist = distribute(job=job, workers=2)(combine)

    async def main() -> list[int]:
        return await dist.acall(range(10), range(10))

    assert asyncio.run(main()) == [combine(x, x) for x in range(10)]


@pytest.mark.parametrize("job", JOBS)
def test_submit_one_plain_call(job: str) -> None:
    dist = distribute(job=job, workers=2)(combine)
    assert dist.submit(2, 3, scale=2).result(timeout=30) == combine(2, 3, scale=2)


@pytest.mark.parametrize("job", ["io", "web", "serial"])
def test_where_calls_run(job: str) -> None:
    names = set(distribute(job=job, workers=2)(thread_name)(range(20)))
    if job == "serial":
        assert names == {threading.current_thread().name}
    else:
        assert threading.current_thread().name not in names


def touch_pair(x: int, y: int, *, marker: str) -> int:
    Path(marker, f"{x}-{y}").touch()
    return x + y


def touch_batch(numbers: list[int], power: int, *, marker: str) -> int:
    Path(marker, str(power)).touch()
    return power


bad_calls = st.one_of(
    st.tuples(st.just("scalar"), st.integers(0, 5), st.integers(0, 5)),
    st.tuples(st.just("lengths"), st.integers(0, 30), st.integers(0, 30)).filter(
        lambda t: t[1] != t[2]
    ),
    st.tuples(st.just("divide"), st.integers(1, 30), st.integers(1, 9)).filter(
        lambda t: t[1] % t[2] != 0
    ),
    st.tuples(st.just("unbound"), st.integers(0, 5), st.integers(0, 5)),
)


@pytest.mark.parametrize("job", JOBS)
@settings(max_examples=12, deadline=None)
@given(case=bad_calls, workers=workers_st)
def test_bad_input_raises_before_any_dispatch(
    job: str, case: tuple[str, int, int], workers: int
) -> None:
    kind, a, b = case
    pair = distribute(job=job, workers=workers)(touch_pair)
    batch = distribute(job=job, workers=workers)(touch_batch)
    with tempfile.TemporaryDirectory() as marker:
        error: type[Exception]
        if kind == "scalar":
            call: Callable[[], Any] = lambda: pair(a, range(b), marker=marker)  # noqa: E731
            error, words = TypeError, "'x'"
        elif kind == "lengths":
            call = lambda: pair(range(a), range(b), marker=marker)  # noqa: E731
            error, words = ValueError, f"'x' with {a}, 'y' with {b}"
        elif kind == "divide":
            call = lambda: batch(list(range(a)), range(b), marker=marker)  # noqa: E731
            error, words = ValueError, f"multiple of {b}"
        else:
            call = lambda: pair(range(a), range(a), range(b), marker=marker)  # noqa: E731
            error, words = TypeError, "touch_pair"
        with pytest.raises(error) as info:
            call()
        assert words in str(info.value)
        assert os.listdir(marker) == []
