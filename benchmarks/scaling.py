"""S10: the function service's throughput at 8 and 32 workers, against the ideal.

The service is started as ``just-distribute cluster`` would start it (one single-threaded
worker process per worker), and measured by the load test itself (``run_loadtest`` against
its address): 1000 tasks that each *sleep* 50 ms. 32 sleeping workers on 2 cores is a test of
the per-task overhead (submission, the scheduler's round trip, fetching results), not of the
CPU: the tasks need none.

Every figure is given as milliseconds of wall time per task per slot (``wall x slots /
tasks``), so that the ideal is the task's own 50 ms whatever the worker count, and the ratio
to it is 1 / efficiency. The rounds interleave the worker counts, as the other scenarios
interleave libraries.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from pathlib import Path

from just_distribute.executors.cluster_connect import embedded_service
from just_distribute.loadtest import Breakdown, breakdown, read_csv, run_loadtest
from just_distribute.service.launch import start_service

from .harness import Config, Row, Scenario

__all__ = ["s10"]

#: The targets: the share of the ideal throughput each worker count must reach.
TARGETS = {8: 0.90, 32: 0.80}
PARTS = ("start", "gaps", "overrun", "tail", "back")


def _row_name(workers: int) -> str:
    return f"just_distribute service, {workers} workers"


def s10(cfg: Config) -> Scenario:
    """S10: the load test's efficiency with 50 ms sleeping tasks, 8 and 32 workers."""
    counts = [2] if cfg.smoke else sorted(TARGETS)
    tasks = cfg.size(1000, 20)
    duration = cfg.size(50, 20) / 1000
    rows = {n: Row(_row_name(n), unit="ms", ours=True) for n in counts}
    parts: dict[int, list[Breakdown]] = {n: [] for n in counts}
    with contextlib.ExitStack() as stack:
        if cfg.smoke:
            # The embedded cluster of S5/S6 (the same service, 2 workers): started once.
            services = {n: embedded_service(n) for n in counts}
        else:
            services = {n: stack.enter_context(start_service(n)) for n in counts}
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jd-scaling-")))
        for i in range(cfg.runs):
            for n, svc in services.items():
                where = out / f"{n}-{i}"
                try:
                    (summary,) = run_loadtest(
                        address=svc.address, tasks=[tasks], duration=duration, out=where,
                        echo=lambda _line: None,
                    )
                except Exception as exc:
                    rows[n].error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                    continue
                rows[n].values.append(summary.wall * summary.slots / summary.tasks * 1000)
                parts[n] += breakdown(read_csv(where / "results.csv"))
    sc = Scenario(
        "S10", "the service scales",
        f"the load test: {tasks:,} tasks that each sleep {duration * 1000:g} ms, on the "
        f"function service with {' and '.join(map(str, counts))} single-threaded worker "
        f"processes; ms of wall time per task per slot",
        list(rows.values()), reference="ideal (the task's own duration)",
        reference_value=duration * 1000, ratio_label="x ideal",
        target="≥ 90% of the ideal throughput at 8 workers, ≥ 80% at 32",
    )
    verdicts, met = [], True
    for n, row in rows.items():
        if not row.values:
            met = False
            continue
        efficiency = duration * 1000 / row.median
        met = met and efficiency >= TARGETS.get(n, 0.9)
        verdicts.append(f"{n} workers {efficiency:.0%}")
    sc.met = None if cfg.smoke else met
    sc.verdict = ", ".join(verdicts)
    for n, found in parts.items():
        if found:
            shares = {p: statistics.median(getattr(b, p) / b.wall for b in found) for p in PARTS}
            sc.notes.append(
                f"Where the rest goes at {n} workers (medians, share of the wall time): "
                + ", ".join(f"{p} {v:.1%}" for p, v in shares.items())
                + " (see the load test's report: *gaps* is the per-task round trip between "
                "two tasks of a worker, *overrun* tasks sleeping longer than asked while "
                "their worker waits for a CPU)."
            )
    return sc
