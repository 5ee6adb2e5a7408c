"""CPU-bound work on numpy arrays and pandas frames: batches, not elements — and threads or
processes, measured.

numpy and pandas release the GIL inside most of their vectorised operations, so threads
(``job="io"``) run them in parallel without copying any data; processes (``job="compute"``)
must send every batch to a worker and its result back. Pure-Python code holds the GIL, and
only processes run it in parallel. This script measures both kinds of work on serial, io
and compute and prints each job's time as a ratio of the serial time (below 1: faster).

Run: python examples/numpy_pandas.py            (small inputs: a quick check)
     python examples/numpy_pandas.py --measure  (4 million values: the recipe's numbers)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from just_distribute import distribute

WORKERS = 2


@distribute(job="compute", workers=WORKERS, flatten=True)
def normalise_rows(rows: np.ndarray) -> np.ndarray:
    """Each call gets a view of consecutive rows; flatten=True joins the results."""
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@distribute(job="compute", workers=WORKERS, flatten=True)
def enrich(frame: pd.DataFrame) -> pd.DataFrame:
    """Each call gets a slice of rows, index kept; the slices are concatenated back."""
    out = frame.copy()
    out["total"] = out["price"] * out["quantity"]
    return out


# -- the measured kinds of work -------------------------------------------------------------
def numpy_sort(values: np.ndarray) -> float:
    """Vectorised numpy (sorting releases the GIL): the median of a batch."""
    return float(np.sort(values)[len(values) // 2])


def pandas_columns(frame: pd.DataFrame) -> float:
    """Vectorised pandas column arithmetic (numpy underneath, the GIL released)."""
    total = frame["price"] * frame["quantity"] + np.sqrt(frame["quantity"])
    return float(total.sum())


def python_loop(numbers: list[int]) -> int:
    """Pure Python: holds the GIL all the time."""
    return sum(int(d) for n in numbers for d in str(n))


def timed(fn: Callable[[Any], Any], data: Any, job: str) -> float:
    """The best of three runs of ``fn`` over ``data`` on ``job``, in seconds."""
    dist = distribute(fn, job=job, workers=WORKERS, batches=8)
    dist(data)  # warm: start the workers, import numpy and pandas in them
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        dist(data)
        best = min(best, time.perf_counter() - started)
    return best


def compare(n: int) -> None:
    """Print, per kind of work on ``n`` values, io and compute as ratios of serial time."""
    rng = np.random.default_rng(2)
    work: list[tuple[str, Callable[[Any], Any], Any]] = [
        ("numpy sort", numpy_sort, rng.random(n)),
        ("pandas columns", pandas_columns,
         pd.DataFrame({"price": rng.random(n), "quantity": rng.integers(0, 100, n)})),
        ("pure Python", python_loop, list(range(n // 10))),
    ]
    for label, fn, data in work:
        serial = timed(fn, data, "serial")
        io = timed(fn, data, "io")
        compute = timed(fn, data, "compute")
        print(
            f"{label:<15} serial {serial:.3f}s  io {io / serial:.2f}x  "
            f"compute {compute / serial:.2f}x"
        )


def main() -> None:
    data = np.random.default_rng(1).random((50_000, 16))
    unit = normalise_rows(data)
    assert unit.shape == data.shape and np.allclose(np.linalg.norm(unit, axis=1), 1.0)
    print(f"numpy: normalised {unit.shape[0]} rows of {unit.shape[1]} in 2 processes")

    orders = pd.DataFrame({"price": np.linspace(1, 2, 10_000), "quantity": np.arange(10_000)})
    enriched = enrich(orders)
    assert enriched.index.equals(orders.index)
    expected = (orders.price * orders.quantity).sum()
    assert np.isclose(enriched["total"].sum(), expected)
    print(f"pandas: {len(enriched)} rows enriched, revenue {enriched['total'].sum():,.2f}")
    compare(4_000_000 if "--measure" in sys.argv else 200_000)
    print("numpy_pandas ok")


if __name__ == "__main__":
    main()
