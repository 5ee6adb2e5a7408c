"""The load test's records: one row per task, summaries per run, the table and the CSV."""

from __future__ import annotations

import csv
import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "OUTPUTS", "Breakdown", "RunSummary", "TaskRecord", "breakdown", "format_table", "read_csv",
    "summarize", "write_csv",
]

#: The files a load test writes into its ``--out`` directory.
OUTPUTS = ("results.csv", "throughput.png", "timeline.png", "allocation.png", "report.md")


_FIELDS = (
    "run", "workers", "slots", "tasks", "kind", "duration", "task", "worker",
    "submitted", "started", "ended", "received",
)


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """One task of a load test: where it ran and when (seconds since the epoch).

    Attributes:
        run: the run it belongs to (one run = one worker count x one task count).
        workers: the service's worker count in that run.
        slots: tasks the service could run at once (worker threads).
        tasks: the run's task count.
        kind: ``"sleep"`` or ``"cpu"``.
        duration: seconds each task sleeps or computes.
        task: the task's index in its run.
        worker: the address of the worker that ran it.
        submitted: when the client submitted it.
        started: when it started on the worker.
        ended: when it ended on the worker.
        received: when its result reached the client.
    """

    run: int
    workers: int
    slots: int
    tasks: int
    kind: str
    duration: float
    task: int
    worker: str
    submitted: float
    started: float
    ended: float
    received: float


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The figures of one run, computed from its task records by :func:`summarize`.

    Attributes:
        run: the run's number.
        workers: the service's worker count.
        slots: tasks it could run at once.
        tasks: tasks submitted.
        wall: seconds from the first submission to the last result.
        throughput: tasks per second over ``wall``.
        ideal: ``slots / duration``, the throughput with no overhead at all.
        efficiency: ``throughput / ideal``.
        workers_used: how many workers ran at least one task.
        min_per_worker: the fewest tasks a worker ran (0 if one ran none).
        max_per_worker: the most tasks a worker ran.
    """

    run: int
    workers: int
    slots: int
    tasks: int
    wall: float
    throughput: float
    ideal: float
    efficiency: float
    workers_used: int
    min_per_worker: int
    max_per_worker: int


# -- figures from the records -----------------------------------------------------------
def _by_run(records: Sequence[TaskRecord]) -> list[tuple[int, list[TaskRecord]]]:
    """The records grouped by run, in run order (each group in the records' order)."""
    runs: dict[int, list[TaskRecord]] = {}
    for r in records:
        runs.setdefault(r.run, []).append(r)
    return sorted(runs.items())


def summarize(records: Sequence[TaskRecord]) -> list[RunSummary]:
    """One :class:`RunSummary` per run, computed from the task records only."""
    out = []
    for run, rows in _by_run(records):
        first = rows[0]
        wall = max(r.received for r in rows) - min(r.submitted for r in rows)
        throughput = len(rows) / wall if wall > 0 else 0.0
        ideal = first.slots / first.duration if first.duration > 0 else float("inf")
        per = Counter(r.worker for r in rows)
        out.append(RunSummary(
            run=run, workers=first.workers, slots=first.slots, tasks=len(rows), wall=wall,
            throughput=throughput, ideal=ideal,
            efficiency=throughput / ideal if ideal not in (0.0, float("inf")) else 0.0,
            workers_used=len(per),
            min_per_worker=min(per.values()) if len(per) >= first.workers else 0,
            max_per_worker=max(per.values()),
        ))
    return out


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Where a run's wall time went beyond the ideal, in seconds per slot.

    The parts add up to ``wall``: ``ideal + start + gaps + overrun + tail + back``.

    Attributes:
        run: the run's number.
        wall: seconds from the first submission to the last result.
        ideal: tasks x duration / slots: the wall time with no overhead at all.
        start: from the submission to a slot's first task (submitting, scheduling, the first
            hand-over to each worker), averaged over the slots.
        gaps: a slot idle between two of its tasks (the per-task round trip: the worker
            reports a task done and starts or receives the next), summed per slot, averaged.
        overrun: the tasks themselves running longer than ``duration`` (a late wake-up from
            sleep, a worker waiting for a CPU), summed per slot, averaged.
        tail: a slot idle at the end while other slots still ran tasks (uneven shares).
        back: from the last task's end to its result at the client.
    """

    run: int
    wall: float
    ideal: float
    start: float
    gaps: float
    overrun: float
    tail: float
    back: float


def breakdown(records: Sequence[TaskRecord]) -> list[Breakdown]:
    """One :class:`Breakdown` per run whose workers have one slot each (else none).

    Worker and client times are compared, so the clocks must agree (one machine, or
    synchronised ones).
    """
    out = []
    for run, rows in _by_run(records):
        first = rows[0]
        by_worker: dict[str, list[TaskRecord]] = {}
        for r in rows:
            by_worker.setdefault(r.worker, []).append(r)
        if first.slots != first.workers:  # slots of one worker overlap: no per-slot account
            continue
        t0 = min(r.submitted for r in rows)
        last_end = max(r.ended for r in rows)
        start = gaps = overrun = tail = 0.0
        for tasks in by_worker.values():
            tasks.sort(key=lambda r: r.started)
            start += tasks[0].started - t0
            gaps += sum(max(0.0, b.started - a.ended) for a, b in itertools.pairwise(tasks))
            overrun += sum(r.ended - r.started - r.duration for r in tasks)
            tail += last_end - max(r.ended for r in tasks)
        # Slots that ran no task were idle the whole run: count that as start.
        idle = first.slots - len(by_worker)
        start += idle * (last_end - t0)
        n = first.slots
        out.append(Breakdown(
            run=run, wall=max(r.received for r in rows) - t0,
            ideal=len(rows) * first.duration / n, start=start / n, gaps=gaps / n,
            overrun=overrun / n, tail=tail / n, back=max(r.received for r in rows) - last_end,
        ))
    return out


def _scaling(summaries: Sequence[RunSummary]) -> dict[int, float]:
    """Per run: throughput / (workers x throughput with the fewest workers, same tasks)."""
    base: dict[int, RunSummary] = {}
    for s in summaries:
        if s.tasks not in base or s.workers < base[s.tasks].workers:
            base[s.tasks] = s
    out = {}
    for s in summaries:
        b = base[s.tasks]
        per_worker_base = b.throughput / b.workers if b.workers else 0.0
        out[s.run] = s.throughput / (s.workers * per_worker_base) if per_worker_base else 0.0
    return out


def format_table(summaries: Sequence[RunSummary], *, markdown: bool = True) -> str:
    """The runs as a table: markdown, or plain text for a terminal."""
    scaling = _scaling(summaries)
    head = ["workers", "tasks", "wall s", "tasks/s", "ideal/s", "efficiency", "scaling",
            "workers used", "tasks per worker"]
    rows = [
        [str(s.workers), str(s.tasks), f"{s.wall:.3f}", f"{s.throughput:.1f}",
         f"{s.ideal:.1f}", f"{s.efficiency:.1%}", f"{scaling[s.run]:.1%}",
         str(s.workers_used), f"{s.min_per_worker}-{s.max_per_worker}"]
        for s in summaries
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, records: Sequence[TaskRecord]) -> None:
    """Write the records, one row per task."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_FIELDS)
        for r in records:
            w.writerow([
                r.run, r.workers, r.slots, r.tasks, r.kind, r.duration, r.task, r.worker,
                f"{r.submitted:.6f}", f"{r.started:.6f}", f"{r.ended:.6f}", f"{r.received:.6f}",
            ])


def read_csv(path: Path | str) -> list[TaskRecord]:
    """Read the records back from a ``results.csv``."""
    with Path(path).open(newline="") as f:
        return [
            TaskRecord(
                int(row["run"]), int(row["workers"]), int(row["slots"]), int(row["tasks"]),
                row["kind"], float(row["duration"]), int(row["task"]), row["worker"],
                float(row["submitted"]), float(row["started"]), float(row["ended"]),
                float(row["received"]),
            )
            for row in csv.DictReader(f)
        ]
