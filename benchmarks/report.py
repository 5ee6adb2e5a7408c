"""Writes the results: ``performance.md`` (tables, targets, machine, versions) and a plot."""

from __future__ import annotations

import math
from pathlib import Path

from .harness import Row, Scenario

__all__ = ["plot", "write_markdown"]


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"
    return f"{value:.1f} {unit}"


def _status(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "reported"}[met]


def _row_line(sc: Scenario, row: Row) -> str:
    name = f"**{row.name}**" if row.ours else row.name
    if row.error is not None:
        return f"| {name} | failed: {row.error} | | | |"
    ref = sc.ref()
    ratio = row.median / ref if ref and not math.isnan(ref) else float("nan")
    ratio_text = "—" if math.isnan(ratio) else f"{ratio:.2f}x"
    spread = f"{_fmt(row.low, row.unit)} - {_fmt(row.high, row.unit)}"
    return (
        f"| {name} | {_fmt(row.median, row.unit)} | {spread} | {ratio_text} | "
        f"{len(row.values)}{'; ' + row.note if row.note else ''} |"
    )


def write_markdown(
    path: Path,
    scenarios: list[Scenario],
    machine: dict[str, str],
    versions: dict[str, str],
    *,
    image: str | None,
    runs: int,
    seconds: float,
) -> None:
    """Write the performance page."""
    out = [
        "# Performance",
        "",
        "Written by the benchmark: `make bench` (or `python -m benchmarks`) regenerates this "
        "page and its plot. Every scenario runs all its libraries side by side in one "
        f"process: a warm-up each, then {runs} counted rounds that interleave the libraries "
        "(so that a burst of load on the machine falls on all of them alike). The tables "
        "give the median, the fastest and slowest counted run, and the median as a ratio to "
        "the scenario's reference. Lower is better everywhere.",
        "",
        "## Targets",
        "",
        "| # | workload | target | measured | |",
        "|---|---|---|---|---|",
    ]
    for sc in scenarios:
        out.append(
            f"| {sc.key} | {sc.title} | {sc.target} | {sc.verdict or '—'} | "
            f"{_status(sc.met)} |"
        )
    out += [""]
    if image:
        out += [f"![Medians of every scenario, as ratios to its reference]({image})", ""]
    for sc in scenarios:
        ref_name = (
            f"{sc.reference} = {_fmt(sc.ref(), sc.rows[0].unit)}"
            if sc.reference_value is not None
            else sc.reference
        )
        out += [
            f"## {sc.key}: {sc.title}",
            "",
            f"{sc.workload}. Reference for the ratios: {ref_name}. Target: {sc.target}"
            f" — {_status(sc.met)}{': ' + sc.verdict if sc.verdict else ''}.",
            "",
            f"| library | median | min - max | {sc.ratio_label} | runs |",
            "|---|---|---|---|---|",
            *(_row_line(sc, row) for row in sc.rows),
            "",
            *sc.notes,
            *([""] if sc.notes else []),
        ]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in machine.items()]
    out += [f"| benchmark time | {seconds / 60:.1f} min |", "", "## Versions", ""]
    out += ["| package | version |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in versions.items()]
    out.append("")
    path.write_text("\n".join(out))


def plot(path: Path, scenarios: list[Scenario]) -> bool:
    """Draw one panel per scenario: each library's median as a ratio to the reference,
    with its min-max range. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [sc for sc in scenarios if any(r.values for r in sc.rows)]
    cols = 2
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows), squeeze=False)
    for ax, sc in zip(axes.flat, shown, strict=False):
        data = [r for r in sc.rows if r.values]
        ref = sc.ref()
        names = [r.name for r in data]
        med = [r.median / ref for r in data]
        lo = [(r.median - r.low) / ref for r in data]
        hi = [(r.high - r.median) / ref for r in data]
        colors = ["tab:orange" if r.ours else "tab:blue" for r in data]
        y = list(range(len(data)))
        ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        if max(med) / max(min(med), 1e-9) > 30:
            ax.set_xscale("log")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{sc.key}: {sc.title} ({sc.ratio_label}, lower is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
