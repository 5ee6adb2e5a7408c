"""Training curves from a grid of model fits on the cluster, live and afterwards.

Each call fits a tiny linear model by gradient descent (numpy only) and publishes its loss
every epoch with ``just_distribute.update``. The caller follows the curves while the grid
runs (``on_update=``) and draws them from the run report at the end (matplotlib).

Run: python examples/training_curves.py     (uses JUST_DISTRIBUTE_ADDRESS, else an
embedded local cluster)
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from just_distribute import Update, distribute, update

EPOCHS = 25
RATES = [0.01, 0.03, 0.1, 0.3]
SEED = 0


@distribute(job="cluster")
def fit(rate: float, *, epochs: int = EPOCHS) -> float:
    """Fit y = X w by full-batch gradient descent; publish the loss after every epoch."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(200, 5))
    y = x @ np.arange(1.0, 6.0) + rng.normal(scale=0.1, size=200)
    w = np.zeros(5)
    loss = float("nan")
    for epoch in range(epochs):
        error = x @ w - y
        loss = float(np.mean(error**2))
        update(epoch=epoch, loss=loss)
        w -= rate * 2 * x.T @ error / len(y)
    update(f"learning rate {rate}: final loss {loss:.4f}")
    return loss


def main() -> None:
    live: dict[int, list[float]] = defaultdict(list)

    def follow(u: Update) -> None:
        # In a notebook, redraw a figure here (see the recipe); this script just collects.
        if "loss" in u.values:
            live[u.index].append(u.values["loss"])

    finals, report = fit.with_options(on_update=follow).report(RATES)
    assert all(len(live[i]) == EPOCHS for i in range(len(RATES)))
    print(f"followed {sum(map(len, live.values()))} losses live from {len(RATES)} fits")

    # Afterwards: the curves are in the report, per call.
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for index, rate in enumerate(RATES):
        curve = [u.values["loss"] for u in report.updates[index] if "loss" in u.values]
        assert curve == live[index]  # what came live is what the report kept
        ax.plot(range(len(curve)), curve, label=f"rate {rate}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.legend()
    out = Path("training_curves.png")
    fig.savefig(out, dpi=80)
    for index in range(len(RATES)):
        print(report.updates[index][-1].message)
    best = min(range(len(RATES)), key=finals.__getitem__)
    print(f"best learning rate {RATES[best]}, curves drawn to {out}")
    print("training_curves ok")


if __name__ == "__main__":
    main()
