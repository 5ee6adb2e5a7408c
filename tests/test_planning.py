"""Argument roles from type hints, cutting into batches, and bad input failing before dispatch.

This module uses ``from __future__ import annotations`` on purpose: every hint below is a
string until the planner resolves it.
"""

from __future__ import annotations

import collections.abc as cabc  # noqa: F401 - named in hint strings below
import itertools
import threading
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, List, Optional, TypeVar  # noqa: UP035 - tested on purpose

import numpy as np
import pandas as pd
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from just_distribute import distribute
from just_distribute.planning import Role, analyse, annotation_role, cut_bounds, make_plan

T = TypeVar("T")

BATCH_HINTS = [
    "list[int]", "List[int]", "Sequence[int]", "Iterable[int]", "tuple[int, ...]",
    "Optional[list[int]]", "Annotated[list[int], 'meters']", "np.ndarray", "pd.DataFrame",
    "pd.Series", "set[int]", "cabc.Collection[int]", "list[int] | None",
]
ELEMENT_HINTS = [
    "int", "float", "str", "bytes", "bytearray", "dict", "dict[str, int]", "Mapping[str, int]",
    "tuple[int, str]", "Any", "T", "Optional[int]", "Path",
]


def _with_hint(hint: str | None) -> Callable[..., Any]:
    def fn(x):  # type: ignore[no-untyped-def]
        return x

    if hint is not None:
        fn.__annotations__ = {"x": hint}
    return fn


@pytest.mark.parametrize("hint", BATCH_HINTS)
def test_batch_hints_as_strings(hint: str) -> None:
    assert analyse(_with_hint(hint)).roles["x"] is Role.BATCH


@pytest.mark.parametrize("hint", ELEMENT_HINTS)
def test_element_hints_as_strings(hint: str) -> None:
    assert analyse(_with_hint(hint)).roles["x"] is Role.ELEMENT


def test_no_annotation_is_an_element() -> None:
    assert analyse(_with_hint(None)).roles["x"] is Role.ELEMENT


@pytest.mark.parametrize(
    ("tp", "role"),
    [
        (List[int], Role.BATCH),  # noqa: UP006
        (Sequence[int], Role.BATCH),
        (Iterable[int], Role.BATCH),
        (tuple[int, ...], Role.BATCH),
        (Optional[list[int]], Role.BATCH),  # noqa: UP045
        (Annotated[list[int], "m"], Role.BATCH),
        (np.ndarray, Role.BATCH),
        (pd.DataFrame, Role.BATCH),
        (str, Role.ELEMENT),
        (bytes, Role.ELEMENT),
        (dict, Role.ELEMENT),
        (typing.Mapping[str, int], Role.ELEMENT),
        (tuple[int, str], Role.ELEMENT),
        (T, Role.ELEMENT),
    ],
)
def test_annotation_objects(tp: Any, role: Role) -> None:
    assert annotation_role(tp) is role


def test_future_annotations_in_a_real_signature() -> None:
    def fn(a: list[int], b: str, c: Optional[Sequence[float]], d: int = 1) -> None:  # noqa: UP045
        pass

    info = analyse(fn)
    assert isinstance(fn.__annotations__["a"], str)  # the module really defers its hints
    assert dict(info.roles) == {
        "a": Role.BATCH, "b": Role.ELEMENT, "c": Role.BATCH, "d": Role.ELEMENT
    }


# -- each batch hint cuts the input into contiguous batches --------------------------------
@pytest.mark.parametrize(
    "hint",
    ["list[int]", "List[int]", "Sequence[int]", "Iterable[int]", "tuple[int, ...]",
     "Optional[list[int]]", "Annotated[list[int], 'm']"],
)
def test_batch_hint_runs_as_batches(hint: str) -> None:
    fn = _with_hint(hint)
    dist = distribute(job="io", workers=3)(fn)
    data = list(range(20))
    batches = dist(data)
    assert len(batches) == 3
    assert all(type(b) is list for b in batches)
    assert [x for b in batches for x in b] == data


def test_numpy_batches_are_views_on_io() -> None:
    arr = np.arange(1000, dtype=np.int64)

    @distribute(job="io", workers=4)
    def view(a: np.ndarray) -> tuple[bool, bool, int]:
        return isinstance(a, np.ndarray), bool(np.shares_memory(a, arr)), len(a)

    out = view(arr)
    assert [len_ for _, _, len_ in out] == [250, 250, 250, 250]
    assert all(is_array and shared for is_array, shared, _ in out)


def _array_batch(a: np.ndarray) -> tuple[str, int, int]:
    return type(a).__name__, int(a[0]), len(a)


def test_numpy_batches_on_compute_are_arrays() -> None:
    arr = np.arange(10, dtype=np.int64)
    out = distribute(job="compute", workers=3)(_array_batch)(arr)
    assert out == [("ndarray", 0, 4), ("ndarray", 4, 3), ("ndarray", 7, 3)]


def _frame_rows(df: pd.DataFrame) -> tuple[str, list[int]]:
    return type(df).__name__, list(df.index)


@pytest.mark.parametrize("job", ["compute", "io"])
def test_dataframe_row_slices(job: str) -> None:
    df = pd.DataFrame({"a": range(10), "b": [str(i) for i in range(10)]})
    out = distribute(job=job, workers=3)(_frame_rows)(df)
    assert out == [("DataFrame", [0, 1, 2, 3]), ("DataFrame", [4, 5, 6]),
                   ("DataFrame", [7, 8, 9])]


def _add(x: int, y: int) -> int:
    return x + y


@pytest.mark.parametrize("job", ["compute", "io", "web", "serial"])
def test_generators_for_element_parameters(job: str) -> None:
    dist = distribute(job=job, workers=2)(_add)
    assert dist((i for i in range(50)), map(int, range(50))) == [2 * i for i in range(50)]
    assert list(dist.iter((i for i in range(5)), iter(range(5)))) == [0, 2, 4, 6, 8]


def test_generator_for_a_batch_parameter() -> None:
    @distribute(job="io", workers=2)
    def size(numbers: list[int]) -> int:
        return len(numbers)

    assert size(i for i in range(9)) == [5, 4]


# -- cutting: properties -------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 500), k=st.integers(1, 40))
def test_cut_bounds_cover_in_order_and_differ_by_at_most_one(n: int, k: int) -> None:
    bounds = cut_bounds(n, k)
    assert len(bounds) == k
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(), max_size=300),
    workers=st.integers(1, 12),
    kind=st.sampled_from(["list", "tuple", "range", "ndarray"]),
)
def test_autobatch_plan_concatenates_to_the_input(
    data: list[int], workers: int, kind: str
) -> None:
    def fn(numbers: Sequence[int]) -> None:
        pass

    value: Any = {
        "list": data, "tuple": tuple(data), "range": range(len(data)),
        "ndarray": np.asarray(data, dtype=object),
    }[kind]
    plan = make_plan(
        analyse(fn), fn, (value,), {}, workers=lambda: workers, autobatch=True, batches=None,
        flatten=False, materialize=True,
    )
    batches = plan.columns[0]
    assert len(batches) == min(workers, len(data))
    assert [x for b in batches for x in b] == list(value)
    if batches:
        sizes = [len(b) for b in batches]
        assert max(sizes) - min(sizes) <= 1
        assert all(type(b) is type(value) for b in batches)


# -- bad input: fails in the caller, before any dispatch -----------------------------------
@distribute(job="compute", workers=5)
def marked(x: int, y: int, *, marker: str = "") -> int:
    Path(marker, f"{x}-{y}").touch()
    return x + y


@distribute(job="compute", workers=5)
def marked_batches(numbers: list[int], power: int, *, marker: str = "") -> int:
    Path(marker, f"{power}").touch()
    return power


def _our_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("just_distribute")}


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda m: marked(1, [1, 2], marker=m), TypeError, ["'x'", "iterable"]),
        (lambda m: marked("ab", [1, 2], marker=m), TypeError, ["'x'", "str"]),
        (lambda m: marked([1, 2, 3], [1, 2], marker=m), ValueError,
         ["'x' with 3", "'y' with 2"]),
        (lambda m: marked([1], [2], [3], marker=m), TypeError, ["marked", "positional"]),
        (lambda m: marked([1], [2], z=3, marker=m), TypeError, ["marked", "'z'"]),
        (lambda m: marked(marker=m), TypeError, ["marked"]),
        (lambda m: marked_batches(list(range(10)), range(3), marker=m), ValueError,
         ["'power' (3)", "'numbers' with 10", "multiple of 3"]),
        (lambda m: marked_batches(list(range(10)), range(0), marker=m), ValueError,
         ["'numbers' with 10"]),
    ],
)
def test_bad_input_raises_before_dispatch(
    tmp_path: Path, call: Callable[[str], Any], error: type[Exception], words: list[str]
) -> None:
    before = _children()
    with pytest.raises(error) as info:
        call(str(tmp_path))
    for word in words:
        assert word in str(info.value), str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing ran
    assert _children() == before  # no pool was started for it


def test_bad_jobs_and_workers_fail_at_decoration() -> None:
    with pytest.raises(ValueError, match='job="cluster"'):
        distribute(job="ray")
    with pytest.raises(ValueError) as info:
        distribute(job="gpu", workers=2)
    for name in ("compute", "io", "web", "serial", "cluster"):
        assert f"'{name}'" in str(info.value)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="workers"):
            distribute(job="io", workers=bad)
        with pytest.raises(ValueError, match="workers"):
            distribute(_add, job="io", workers=bad)


def test_empty_input_returns_empty_and_starts_no_pool(tmp_path: Path) -> None:
    before = _children()
    threads_before = _our_threads()

    @distribute(job="compute", workers=7)
    def never(x: int) -> int:
        raise AssertionError("must not run")

    @distribute(job="compute", workers=7)
    def never_batch(numbers: list[int]) -> int:
        raise AssertionError("must not run")

    @distribute(job="io", workers=7)
    def never_io(x: int) -> int:
        raise AssertionError("must not run")

    assert never([]) == []
    assert never(iter([])) == []
    assert never_batch([]) == []
    assert never_batch(np.array([])) == []
    assert never_io(range(0)) == []
    assert _children() == before
    assert _our_threads() <= threads_before


@settings(max_examples=25, deadline=None)
@given(lx=st.integers(0, 20), ly=st.integers(0, 20))
def test_mismatched_lengths_never_dispatch(lx: int, ly: int) -> None:
    calls: list[int] = []

    @distribute(job="io", workers=2)
    def count(x: int, y: int) -> None:
        calls.append(x)

    if lx == ly:
        assert count(range(lx), range(ly)) == [None] * lx
        assert len(calls) == lx
        return
    with pytest.raises(ValueError, match=f"'x' with {lx}, 'y' with {ly}"):
        count(range(lx), range(ly))
    assert calls == []


def test_mapping_and_str_batches_are_not_cut() -> None:
    def fn(config: Mapping[str, int], name: str) -> str:
        return f"{name}{len(config)}"

    dist = distribute(job="io", workers=2)(fn)
    assert dist([{"a": 1}, {"a": 1, "b": 2}], ["p", "q"]) == ["p1", "q2"]


# -- issue 17, item 4: never silently wrong input ----------------------------------------


def test_a_list_of_arrays_for_an_ndarray_parameter_is_one_call_per_array() -> None:
    @distribute(job="compute", workers=2)
    def blur(img: np.ndarray) -> tuple[str, tuple[int, ...]]:
        return type(img).__name__, img.shape

    images = [np.full((4, 3), i, dtype=float) for i in range(200)]
    assert blur(images) == [("ndarray", (4, 3))] * 200
    # One flat array is still cut into views, one per worker.
    assert blur(np.zeros((10, 3))) == [("ndarray", (5, 3))] * 2


def test_a_list_of_frames_for_a_frame_parameter_is_one_call_per_frame() -> None:
    @distribute(job="io", workers=2)
    def rows(frame: pd.DataFrame) -> int:
        assert isinstance(frame, pd.DataFrame)
        return int(frame["a"].sum())

    frames = [pd.DataFrame({"a": range(i + 1)}) for i in range(6)]
    assert rows(frames) == [sum(range(i + 1)) for i in range(6)]
    assert rows(tuple(frames)) == rows(iter(frames)) == rows(frames)


def test_a_series_list_for_a_series_parameter_and_lists_for_list_int() -> None:
    @distribute(job="io", workers=2)
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    assert total([[1, 2], [3], [4, 5, 6]]) == [3, 3, 15]  # ready-made: one call each
    assert total([1, 2, 3, 4]) == [3, 7]  # flat: cut into one batch per worker
    assert list(total.iter(x for x in [[1], [2, 2]])) == [1, 4]

    @distribute(job="io", workers=2)
    def nested(groups: list[list[int]]) -> int:
        return len(groups)

    assert nested([[1], [2], [3], [4]]) == [2, 2]  # list[list[int]]: lists are elements


def test_a_mix_of_batches_and_elements_is_refused() -> None:
    @distribute(job="io", workers=2)
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    with pytest.raises(TypeError, match=r"'numbers'.*item 1"):
        total([[1, 2], 3])


def test_a_groupby_for_a_frame_parameter_is_one_call_per_group() -> None:
    @distribute(job="compute", workers=2)
    def spread(group: pd.DataFrame) -> tuple[int, int]:
        return int(group["k"].iloc[0]), len(group)

    frame = pd.DataFrame({"k": [3, 1, 1, 2, 3, 3], "v": range(6)})
    assert spread(frame.groupby("k")) == [(1, 2), (2, 1), (3, 3)]

    @distribute(job="io", workers=2)
    def biggest(values: pd.Series) -> int:
        return int(values.max())

    assert biggest(frame.groupby("k")["v"]) == [2, 3, 5]


@pytest.mark.parametrize("hint", ["dict", "dict[str, int]", "Mapping[str, int]", "list[int]"])
def test_a_single_mapping_is_refused_with_the_fix(hint: str) -> None:
    fn = distribute(_with_hint(hint), job="io", workers=2)
    with pytest.raises(TypeError) as info:
        fn({"a": 1, "b": 2})
    message = str(info.value)
    assert "'x'" in message and "split into its keys" in message and "x=..." in message
    assert fn([{"a": 1}, {"b": 2}]) if hint != "list[int]" else True


def test_error_notes_show_each_role_and_why() -> None:
    @distribute(job="compute", workers=2)
    def total(numbers, scale: int):  # type: ignore[no-untyped-def]
        return sum(numbers) * scale

    with pytest.raises(TypeError, match="not iterable") as info:
        total([1, 2, 3], [1, 1, 1])
    notes = "\n".join(info.value.__notes__)
    assert "numbers: element — no type hint" in notes
    assert "scale: element — hint int is not a collection" in notes

    @distribute(job="io", workers=2)
    def pair(x: int, values: list[int]) -> int:
        return x + sum(values)

    with pytest.raises(ValueError, match="multiple of 2") as vinfo:
        pair([1, 2], [1, 2, 3])
    notes = "\n".join(vinfo.value.__notes__)
    assert "values: batch — hint list[int] is a collection, cut into batches" in notes
    # The caller-side TypeErrors carry the roles too.
    with pytest.raises(TypeError, match="'x'") as tinfo:
        pair(3, [1, 2, 3])
    assert "x: element — hint int is not a collection" in "\n".join(tinfo.value.__notes__)


def test_iter_with_generators_of_different_lengths_names_the_right_counts() -> None:
    ran: list[int] = []

    @distribute(job="io", workers=2)
    def add(x: int, y: int) -> int:
        ran.append(x)
        return x + y

    with pytest.raises(ValueError) as info:
        list(add.iter((i for i in range(200)), (i for i in range(196))))
    message = str(info.value)
    assert "'y' ran out after 196" in message and "'x' had at least 197" not in message
    assert "'x' had at least" in message
    assert len(ran) <= 196  # no call past the shorter input ran
    # Lengths known up front: refused before any call, with both counts.
    ran.clear()
    with pytest.raises(ValueError, match="'x' with 5, 'y' with 3"):
        add.iter(range(5), [1, 2, 3])
    assert ran == []


def test_ready_made_frames_in_a_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import pandas as pd\n"
        "from just_distribute import distribute\n\n"
        "@distribute(job='compute', workers=2)\n"
        "def rows(frame: pd.DataFrame) -> int:\n"
        "    return len(frame)\n\n"
        "if __name__ == '__main__':\n"
        "    print(rows([pd.DataFrame({'a': range(n)}) for n in (1, 2, 3, 4, 5, 6)]))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[1, 2, 3, 4, 5, 6]"
