"""S9: one big numpy array, sorted per batch on 2 worker processes, next to joblib."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from just_distribute import distribute
from just_distribute.executors import shm, wire

from .harness import Config, Scenario, measure

WORKERS = 2
SLICES = 8
OURS = "just_distribute"
SERIAL = "serial (np.sort per slice)"
JOBLIB = "joblib.Parallel (memory-maps the input)"
ROOT = Path(__file__).resolve().parents[1]


def sort_batch(batch: np.ndarray) -> np.ndarray:
    """S9's call: sort one batch (CPU-bound numpy, no Python loop)."""
    return np.sort(batch)


def _slices(data: np.ndarray) -> list[np.ndarray]:
    return np.array_split(data, SLICES)


def _where_the_time_goes(data: np.ndarray) -> str:
    """One pass of each step of the compute path, in this process, one slice at a time."""
    steps: dict[str, float] = dict.fromkeys(
        ("copy into shared memory", "attach (map)", "sort", "result back", "concatenate"), 0.0
    )
    results = []
    for part in _slices(data):
        t = time.perf_counter()
        message = wire.dumps([[part]], shared=True)
        steps["copy into shared memory"] += time.perf_counter() - t
        t = time.perf_counter()
        (column,) = wire.loads(message)
        steps["attach (map)"] += time.perf_counter() - t
        del message
        t = time.perf_counter()
        out = np.sort(column[0])
        steps["sort"] += time.perf_counter() - t
        t = time.perf_counter()
        back = wire.loads(shm.dumps(out, hand_over=True))
        steps["result back"] += time.perf_counter() - t
        results.append(back)
        del out, column
    t = time.perf_counter()
    np.concatenate(results)
    steps["concatenate"] += time.perf_counter() - t
    return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in steps.items())


# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (kept across exec).
# Writing 5 to clear_refs starts the peak again from the present RSS.
_PEAK = textwrap.dedent("""
    import json, sys
    import numpy as np
    from just_distribute import distribute
    from benchmarks.arrays import sort_batch

    def kib(field):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

    n, flatten = int(sys.argv[1]), sys.argv[2] == "1"
    run = distribute(sort_batch, job="compute", workers=2, batches=8, flatten=flatten)
    run(np.random.default_rng(0).random(1000))
    data = np.random.default_rng(1).random(n)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = kib("VmRSS")
    out = run(data)
    total = sum(float(o.sum()) for o in out) if not flatten else float(out.sum())
    print(json.dumps((kib("VmHWM") - before) * 1024 / data.nbytes))
""")


def _extra_peak(n: int, flatten: bool) -> float | None:
    """The caller's peak RSS during one run, over its RSS with the input allocated, as a
    multiple of the input's size (a fresh interpreter: the peak is its own)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK, str(n), "1" if flatten else "0"],
            capture_output=True, text=True, env=env, timeout=300, check=True,
        )
        return float(json.loads(out.stdout))
    except (subprocess.SubprocessError, ValueError):
        return None


def s9(cfg: Config) -> Scenario:
    """S9: a 400 MB float64 array, ``numpy.ndarray`` batch hint, compute, 2 workers."""
    n = cfg.size(50_000_000, 500_000)
    data = np.random.default_rng(0).random(n)
    expected = np.concatenate([np.sort(s) for s in _slices(data)])
    cases: dict[str, Callable[[], Any]] = {}
    cases[SERIAL] = lambda: np.concatenate([np.sort(s) for s in _slices(data)])
    ours = distribute(sort_batch, job="compute", workers=WORKERS, batches=SLICES, flatten=True)
    cases[OURS] = lambda: ours(data)
    warm: dict[str, Callable[[], Any]] = {OURS: lambda: ours(data[:SLICES * 100])}
    with contextlib.suppress(ImportError):
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=WORKERS)
        cases[JOBLIB] = lambda: np.concatenate(
            par(delayed(sort_batch)(s) for s in _slices(data))
        )
        warm[JOBLIB] = lambda: par(delayed(sort_batch)(s) for s in _slices(data[:800]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = measure(
        cases, cfg.runs, check=lambda r: bool(np.array_equal(r, expected)), warm=warm,
        ours=(OURS,),
    )
    sc = Scenario(
        "S9", "a big numpy array",
        f"a {data.nbytes / 1e6:,.0f} MB float64 array, `numpy.ndarray` batch hint, "
        f"{SLICES} batches, `np.sort` per batch, results concatenated, compute, {WORKERS} "
        f"workers (load average {load:.1f} at the start)",
        rows, reference=SERIAL, ratio_label="x serial",
        target="≤ 0.5x joblib's time, and faster than serial",
    )
    ours_row, ser = sc.row(OURS), sc.row(SERIAL)
    peer = next((r for r in rows if r.name == JOBLIB and r.values), None)
    if ours_row.values and ser.values:
        vs_serial = ours_row.median / ser.median
        verdict = f"{vs_serial:.2f}x serial"
        met = vs_serial < 1.0
        if peer is not None:
            vs_joblib = ours_row.median / peer.median
            verdict += f", {vs_joblib:.2f}x joblib"
            met = met and vs_joblib <= 0.5
            ratios = [a / b for a, b in zip(ours_row.values, peer.values, strict=False)]
            verdict += f" (per round {min(ratios):.2f}-{max(ratios):.2f}x)"
        sc.met, sc.verdict = met, verdict
    sc.notes.append(f"Where the time goes, one slice at a time in one process: "
                    f"{_where_the_time_goes(data)}.")
    peaks = {flat: _extra_peak(n, flat) for flat in (False, True)}
    if all(p is not None for p in peaks.values()):
        sc.notes.append(
            f"The caller's peak RSS over its RSS with the input allocated: "
            f"{peaks[False]:.2f}x the input's size for the list of sorted batches (the "
            f"results themselves, views of their segments), {peaks[True]:.2f}x with "
            f"flatten=True (the parts are copied into the joined array one at a time, each "
            f"unmapped once copied)."
        )
    sc.notes.append(
        "The input goes to the workers through shared memory, the caller writing each batch "
        "once (pwrite into a /dev/shm segment, so the pages never join its own memory); the "
        "workers map it, the results come back the same way, and only names and small "
        "pickles cross the sockets. joblib memory-maps the input too, but its results come "
        "back pickled through pipes."
    )
    return sc
