"""S5 and S6: the cluster job on its embedded dask cluster, next to raw dask ``client.map``.

Every library runs on the same cluster: the embedded one that ``job="cluster"`` starts (a
scheduler and 2 single-threaded worker processes), whose ``Client`` the dask peers borrow.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from just_distribute import distribute
from just_distribute.config import resolve_options
from just_distribute.executors import get_executor

from . import workloads
from .compute import _per_call_ms
from .harness import Config, Scenario, measure

WORKERS = 2
OURS = "just_distribute"


def _client() -> Any:
    """The dask Client of the embedded cluster (started here if it is not yet)."""
    ex = get_executor(resolve_options({"job": "cluster", "workers": WORKERS}))
    client = ex.client()  # type: ignore[attr-defined]
    client.wait_for_workers(WORKERS, timeout=60)
    return client


def _hand_chunked(client: Any, data: list[int], parts: int) -> list[int]:
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    futures = client.map(workloads.square_chunk, chunks, pure=False)
    return list(itertools.chain.from_iterable(client.gather(futures)))


def s5(cfg: Config) -> Scenario:
    """S5: ``x*x`` on 10,000 ints on the embedded cluster."""
    n = cfg.size(10_000, 500)
    data = list(range(n))
    expected = [x * x for x in data]
    client = _client()
    ours = distribute(job="cluster", workers=WORKERS)(workloads.square)
    hand = "dask client.map over 8 hand-made chunks"
    per = "dask client.map per element"
    cases: dict[str, Callable[[], Any]] = {
        OURS: lambda: ours(data),
        hand: lambda: _hand_chunked(client, data, 8),
        per: lambda: client.gather(client.map(workloads.square, data, pure=False)),
    }
    warm = {per: lambda: client.gather(client.map(workloads.square, data[:100], pure=False))}
    rows = measure(cases, cfg.runs, check=lambda r: list(r) == expected, warm=warm, ours=(OURS,))
    sc = Scenario(
        "S5", "tiny calls on a cluster",
        f"`x*x` on {n:,} ints, cluster (embedded, {WORKERS} workers)",
        rows, reference=hand, ratio_label="x hand-chunked",
        target="within 1.2x of hand-chunked dask",
    )
    ours_row, hand_row = sc.row(OURS), sc.row(hand)
    if ours_row.values and hand_row.values:
        ratio = ours_row.median / hand_row.median
        sc.met = ratio <= 1.2
        sc.verdict = f"{ratio:.2f}x hand-chunked dask"
    sc.notes.append(
        "Chunk sizes come from measured call times: the first run sends a few chunks per "
        "worker; once a run has measured the calls as tiny (10,000 calls worth well under one "
        "scheduler round trip), the next runs send them as one task."
    )
    return sc


def s6(cfg: Config) -> Scenario:
    """S6: as S2 (80 calls of ~7 ms) on the embedded cluster."""
    calls = cfg.size(80, 8)
    steps = workloads.calibrate_busy(0.007 if not cfg.smoke else 0.001)
    data = [steps] * calls
    expected = [workloads.busy(steps)] * calls
    client = _client()
    ours = distribute(job="cluster", workers=WORKERS)(workloads.busy)
    serial = "serial (list comprehension)"
    # CPU seconds each run got, next to its wall time: on a shared machine a run is slow
    # when its processes wait for a CPU, which no scheduling change can make up for.
    cpu_of = _cpu_clock(list(client.run(os.getpid).values()))
    got: dict[str, list[tuple[float, float]]] = {serial: [], OURS: []}

    def timed(name: str, clock: Callable[[], float], run: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), clock()
        result = run()
        got[name].append((time.perf_counter() - wall, clock() - cpu))
        return result

    cases: dict[str, Callable[[], Any]] = {
        serial: lambda: timed(serial, time.process_time,
                              lambda: [workloads.busy(x) for x in data]),
        OURS: lambda: timed(OURS, cpu_of, lambda: ours(data)),
        "dask client.map": lambda: client.gather(
            client.map(workloads.busy, data, pure=False)
        ),
    }
    rows = measure(cases, cfg.runs, check=lambda r: list(r) == expected, ours=(OURS,))
    sc = Scenario(
        "S6", "heavy calls on a cluster",
        f"{calls} calls of a pure-Python loop ({steps:,} steps, calibrated to ~7 ms; "
        f"{_per_call_ms(rows, serial, calls)} per call in the serial runs), cluster "
        f"(embedded, {WORKERS} workers)",
        rows, reference=serial, ratio_label="x serial",
        target="speedup ≥ 1.7x over serial",
    )
    ours_row, ser = sc.row(OURS), sc.row(serial)
    if ours_row.values and ser.values:
        speedup = ser.median / ours_row.median
        sc.met = speedup >= 1.7
        sc.verdict = f"speedup {speedup:.2f}x"
    sc.notes.append(
        "The embedded cluster is a scheduler process and 2 single-threaded worker processes; "
        "on 2 cores they share the CPUs with the caller (and with whatever else the machine "
        "runs: see the load average below). just_distribute sends 8 chunks of 10 calls "
        "(one task each) where raw `client.map` sends 80 tasks; a speedup below ~1.9x comes "
        "from CPU time the worker processes did not get, not from scheduling overhead "
        "(per-process CPU times show the workers busy only part of the run when the machine "
        "is loaded)."
    )
    if got[OURS] and got[serial]:
        # Runs 1+ only: the first of each is the warm-up.
        ours_busy = statistics.median(c / (w * WORKERS) for w, c in got[OURS][1:] or got[OURS])
        serial_busy = statistics.median(c / w for w, c in got[serial][1:] or got[serial])
        work = statistics.median(c for _w, c in got[serial])
        spent = statistics.median(c for _w, c in got[OURS])
        sc.notes.append(
            f"Where the time went in this run: the {WORKERS} worker processes were on a CPU "
            f"{ours_busy:.0%} of each of our runs (median), the serial loop {serial_busy:.0%} "
            f"of its runs; the workers spent {spent:.3f} CPU-s per run on {work:.3f} CPU-s of "
            f"serial work ({spent / work:.2f}x: the scheduling, serialisation and dask's own "
            f"bookkeeping). Had both workers and the serial loop had a CPU to themselves, "
            f"the speedup would be about {WORKERS * work / spent:.2f}x."
        )
    if _autogroup():
        sc.notes.append(
            "This kernel schedules by autogroup (`kernel.sched_autogroup_enabled` = 1): the "
            "CPUs are shared between sessions first, then between a session's processes. The "
            "embedded cluster is a session of its own (so that it stops as one process group), "
            "and so gets one session's share, as the caller's serial loop does: while other "
            "sessions keep the machine busy, the two workers together get about what the "
            "serial loop alone gets, and the speedup falls toward 1x. (The compute job's "
            "workers, in the caller's session, share that session's one share the same way.)"
        )
    return sc


def _autogroup() -> bool:
    """Whether the Linux scheduler shares the CPUs between sessions first."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def _cpu_clock(pids: list[int]) -> Callable[[], float]:
    """A clock of the CPU seconds used so far by the processes ``pids`` (children too)."""
    import psutil

    procs = [psutil.Process(pid) for pid in pids]

    def clock() -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # a worker restarted meanwhile
                times = p.cpu_times()
                total += times.user + times.system
        return total

    return clock
