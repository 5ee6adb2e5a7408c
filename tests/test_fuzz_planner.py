"""The planner, fuzzed: random signatures and argument shapes against a reference model.

Each case builds a function with random positional parameters (hints drawn from element and
batch types) and keyword constants, calls its distributed form with random arguments, and
checks one of two outcomes: the results equal a serial reference written from the rules in
the guide (independently of the planner's code), or a ``TypeError``/``ValueError`` is raised
before any call ran. Nothing else is allowed.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from just_distribute import distribute

ELEMENT_HINTS = ["int", "Any", "", "str", "dict", "tuple[int, str]", "Optional[int]"]
BATCH_HINTS = [
    "list[int]", "Sequence[int]", "tuple[int, ...]", "Iterable[int]", "Optional[list[int]]",
    "Annotated[list[int], 'unit']",
]
WORKERS = 3


def describe(value: Any) -> Any:
    """What a call received, comparable across runs: a batch's type and items."""
    if isinstance(value, list | tuple | range):
        return (type(value).__name__, list(value))
    return value


class Case(typing.NamedTuple):
    roles: list[bool]  # True: a batch parameter
    hints: list[str]
    items: list[list[int]]  # per parameter, shaped by ``kinds`` at call time
    kinds: list[str]
    constants: dict[str, int]
    autobatch: bool
    batches: int | None
    flatten: bool
    job: str


def make_function(hints: list[str], calls: list[int]) -> Any:
    params = ", ".join(f"p{i}: {h}" if h else f"p{i}" for i, h in enumerate(hints))
    body = ", ".join(f"describe(p{i})" for i in range(len(hints)))
    source = (
        f"def fuzzed({params}, *, c0: int = 0, c1: int = 0):\n"
        f"    calls.append(1)\n"
        f"    return ({body}, c0, c1)\n"
    )
    namespace: dict[str, Any] = {
        "describe": describe, "calls": calls, "typing": typing, "Any": Any,
        "Optional": Optional, "Annotated": Annotated, "Sequence": Sequence,
        "Iterable": Iterable,
    }
    exec(source, namespace)  # a signature of our choosing
    return namespace["fuzzed"]


def shape(kind: str, items: list[int]) -> Any:
    if kind == "list":
        return list(items)
    if kind == "tuple":
        return tuple(items)
    if kind == "range":
        return range(len(items))
    if kind == "generator":
        return (x for x in items)
    if kind == "scalar":
        return 7
    if kind == "batches":  # ready-made batches: lists of up to 2 items
        return [items[j : j + 2] for j in range(0, len(items), 2)]
    if kind == "dict":  # a single mapping: refused, it would be split into its keys
        return dict.fromkeys(items, 0)
    return "abc"  # kind == "str"


@st.composite
def cases(draw: st.DrawFn) -> Case:
    m = draw(st.integers(1, 3))
    roles = [draw(st.booleans()) for _ in range(m)]
    hints = [draw(st.sampled_from(BATCH_HINTS if r else ELEMENT_HINTS)) for r in roles]
    base = draw(st.integers(0, 7))
    items_per_param, kinds = [], []
    for _ in range(m):
        length = draw(st.sampled_from([base, base, base * 2, base * 3, draw(st.integers(0, 9))]))
        kind = draw(
            st.sampled_from(
                ["list", "list", "tuple", "range", "generator", "scalar", "str", "batches",
                 "dict"]
            )
        )
        items = draw(st.lists(st.integers(-50, 50), min_size=length, max_size=length))
        items_per_param.append(items)
        kinds.append(kind)
    constants = draw(st.dictionaries(st.sampled_from(["c0", "c1"]), st.integers(-5, 5)))
    return Case(
        roles, hints, items_per_param, kinds, constants, draw(st.booleans()),
        draw(st.none() | st.integers(1, 4)), draw(st.booleans()),
        draw(st.sampled_from(["serial", "io"])),
    )


# -- the reference: the rules of the guide, written out plainly ---------------------------


def cut(value: Any, sizes: list[int]) -> list[Any]:
    """Contiguous pieces of the given sizes, of the same container type (else lists)."""
    pieces, start = [], 0
    for size in sizes:
        piece = value[start : start + size]
        pieces.append(piece if isinstance(value, list | tuple | range | str) else list(piece))
        start += size
    return pieces


def reference(case: Case, args: list[Any]) -> tuple[str, Any]:
    for value, is_batch in zip(args, case.roles, strict=True):
        if not is_batch and isinstance(value, str):
            return "error", TypeError  # a str would be split into characters
        if isinstance(value, dict):
            return "error", TypeError  # a single mapping would be split into its keys
        if not isinstance(value, Iterable):
            return "error", TypeError
    values = [list(v) if not isinstance(v, list | tuple | range | str) else v for v in args]
    # Every batch hint here holds ints, so a list whose items are lists is ready-made
    # batches: one call per item, as with autobatch=False.
    ready = [isinstance(v, list) and bool(v) and isinstance(v[0], list) for v in values]
    cut_batches = [
        i for i, b in enumerate(case.roles) if b and case.autobatch and not ready[i]
    ]
    elements = [i for i in range(len(args)) if i not in cut_batches]
    columns: list[list[Any]] = [[] for _ in args]
    if not cut_batches:
        if len({len(values[i]) for i in elements}) > 1:
            return "error", ValueError
        columns = [list(v) for v in values]
    else:
        if elements:
            if len({len(values[i]) for i in elements}) > 1:
                return "error", ValueError
            k = len(values[elements[0]])
            for i in cut_batches:
                total = len(values[i])
                if (k == 0 and total) or (k and total % k):
                    return "error", ValueError
        else:
            totals = {len(values[i]) for i in cut_batches}
            if len(totals) > 1:
                return "error", ValueError
            total = totals.pop()
            workers = 1 if case.job == "serial" else WORKERS
            k = 0 if total == 0 else min(total, case.batches or workers)
        for i in elements:
            columns[i] = list(values[i])
        for i in cut_batches:
            total = len(values[i])
            sizes = [total // k + (1 if j < total % k else 0) for j in range(k)] if k else []
            columns[i] = cut(values[i], sizes)
    constants = (case.constants.get("c0", 0), case.constants.get("c1", 0))
    results = [
        (*(describe(v) for v in row), *constants) for row in zip(*columns, strict=True)
    ]
    if case.flatten:
        return "ok", list(itertools.chain.from_iterable(results))
    return "ok", results


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_planner_matches_the_reference_or_fails_before_dispatch(case: Case) -> None:
    calls: list[int] = []
    fn = distribute(
        make_function(case.hints, calls), job=case.job, workers=WORKERS,
        autobatch=case.autobatch, batches=case.batches, flatten=case.flatten,
    )
    def arguments() -> list[Any]:  # fresh ones each time: generators are one-shot
        return [shape(k, items) for k, items in zip(case.kinds, case.items, strict=True)]

    expected = reference(case, arguments())
    event(f"{expected[0]}: {getattr(expected[1], '__name__', 'results')}")
    if expected[0] == "error":
        with pytest.raises(expected[1]):
            fn(*arguments(), **case.constants)
        assert calls == []  # failed before any call was dispatched
    else:
        assert fn(*arguments(), **case.constants) == expected[1]


# -- numpy and pandas batches: flat, ready-made, grouped ----------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    kind=st.sampled_from(["ndarray", "DataFrame", "Series"]),
    given_as=st.sampled_from(["flat", "list", "tuple", "generator", "groupby"]),
)
def test_numpy_and_pandas_shapes_match_the_reference(
    sizes: list[int], kind: str, given_as: str
) -> None:
    values = np.arange(sum(sizes))
    keys = np.repeat(np.arange(len(sizes)), sizes)
    frame = pd.DataFrame({"k": keys, "v": values})
    whole: Any = {"ndarray": values, "DataFrame": frame, "Series": frame["v"]}[kind]
    bounds = list(itertools.accumulate(sizes, initial=0))
    pieces = [whole[a:b] for a, b in itertools.pairwise(bounds)]
    hint = {"ndarray": np.ndarray, "DataFrame": pd.DataFrame, "Series": pd.Series}[kind]

    def total(batch: Any) -> tuple[str, int, int]:
        column = batch["v"] if isinstance(batch, pd.DataFrame) else batch
        return type(batch).__name__, len(batch), int(column.sum())

    total.__annotations__ = {"batch": hint, "return": tuple}
    fn = distribute(total, job="io", workers=WORKERS)
    if given_as == "flat":
        arg: Any = whole
        k = min(len(values), WORKERS)
        cut_sizes = [len(values) // k + (1 if j < len(values) % k else 0) for j in range(k)]
        cut_bounds_ = list(itertools.accumulate(cut_sizes, initial=0))
        expected_pieces = [whole[a:b] for a, b in itertools.pairwise(cut_bounds_)]
    elif given_as == "groupby":
        if kind == "ndarray":
            return  # a GroupBy is a pandas shape only
        arg = whole.groupby(keys)
        expected_pieces = pieces
    else:
        maker = {"list": list, "tuple": tuple, "generator": lambda p: (x for x in p)}[given_as]
        arg = maker(pieces)
        expected_pieces = pieces
    expected = [total(p) for p in expected_pieces]
    event(f"{kind} {given_as}")
    assert fn(arg) == expected
    if given_as == "generator":
        arg = (x for x in pieces)
    assert list(fn.iter(arg)) == expected
