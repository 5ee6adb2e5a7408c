"""Timing, results and the description of the machine."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config", "Row", "Scenario", "machine", "measure", "versions"]


@dataclass(frozen=True)
class Config:
    """How hard to run: ``smoke`` shrinks every size; ``runs`` counted runs per library."""

    smoke: bool
    runs: int

    def size(self, full: int, smoke: int) -> int:
        """The full size, or the smoke one."""
        return smoke if self.smoke else full


@dataclass
class Row:
    """One library's timings in one scenario (seconds, or another ``unit``)."""

    name: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    unit: str = "s"
    ours: bool = False
    note: str = ""

    @property
    def median(self) -> float:
        """The median of the counted runs (NaN when it failed)."""
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        """The fastest counted run."""
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        """The slowest counted run."""
        return max(self.values) if self.values else float("nan")


@dataclass
class Scenario:
    """The outcome of one scenario: rows, the reference they are compared with, the target."""

    key: str
    title: str
    workload: str
    rows: list[Row]
    reference: str  # the name of the row (or "ideal") the ratios divide by
    reference_value: float | None = None  # for a reference that is not a row (ideal time)
    ratio_label: str = "x reference"
    target: str = ""
    met: bool | None = None
    verdict: str = ""  # the measured number behind ``met``
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, name: str) -> Row:
        """The row called ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def ref(self) -> float:
        """The reference value the ratios divide by."""
        if self.reference_value is not None:
            return self.reference_value
        return self.row(self.reference).median


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def measure(
    cases: dict[str, Callable[[], Any]],
    runs: int,
    *,
    check: Callable[[Any], bool] | None = None,
    warm: dict[str, Callable[[], Any]] | None = None,
    ours: tuple[str, ...] = (),
) -> list[Row]:
    """Time every case: a warm-up run each, then ``runs`` counted rounds.

    The warm-up starts the library's pool and fills its caches: the case itself, or the
    cheaper call given in ``warm`` (for peers whose every run takes many seconds). The
    rounds interleave the libraries (A B C, A B C, ...), so that a burst of load on a shared
    machine falls on every library alike instead of on whichever ran at that moment. The
    first counted result of each library is checked with ``check``; a library that fails
    or returns a wrong result keeps its error and is left out of the later rounds.
    """
    rows = {name: Row(name, ours=name in ours) for name in cases}
    warm = warm or {}
    for name, fn in cases.items():
        try:
            warm.get(name, fn)()
        except Exception as exc:
            rows[name].error = _describe(exc)
            traceback.print_exc(file=sys.stderr)
    for i in range(runs):
        for name, fn in cases.items():
            row = rows[name]
            if row.error is not None:
                continue
            gc.collect()
            try:
                t = time.perf_counter()
                result = fn()
                elapsed = time.perf_counter() - t
                if i == 0 and check is not None and not check(result):
                    raise AssertionError("returned a wrong result")
                row.values.append(elapsed)
            except Exception as exc:
                row.error = _describe(exc)
                traceback.print_exc(file=sys.stderr)
    return list(rows.values())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Cores, CPU model, Python, OS and the load average: what the numbers depend on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    info = {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load average at start"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


PACKAGES = (
    "just-distribute", "joblib", "loky", "mpire", "pathos", "multiprocess", "dill", "dask",
    "distributed", "aiohttp", "numpy", "matplotlib",
)


def versions() -> dict[str, str]:
    """The installed version of every library the benchmark compares or uses."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
