"""CPU-bound work on numpy arrays and pandas frames: batches, not elements.

Run: python examples/numpy_pandas.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from just_distribute import distribute


@distribute(job="compute", workers=2, flatten=True)
def normalise_rows(rows: np.ndarray) -> np.ndarray:
    """Each call gets a view of consecutive rows; flatten=True joins the results."""
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@distribute(job="compute", workers=2, flatten=True)
def enrich(frame: pd.DataFrame) -> pd.DataFrame:
    """Each call gets a slice of rows, index kept; the slices are concatenated back."""
    out = frame.copy()
    out["total"] = out["price"] * out["quantity"]
    return out


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
    print("numpy_pandas ok")


if __name__ == "__main__":
    main()
