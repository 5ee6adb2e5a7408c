"""``just-distribute loadtest``: the function service's throughput, and how it scales.

For each worker count the load test starts the function service (or uses a running one,
``--address``), then for each task count submits that many tasks through the dask client,
each sleeping (or burning CPU for) ``--duration`` seconds. Every task reports the worker that
ran it and when it started and ended there; the client notes when it submitted the task and
when the result came back. From these records it writes, into ``--out``:

- ``results.csv``: one row per task;
- ``throughput.png``: tasks/s against workers, a line per task count, with the ideal line;
- ``timeline.png``: each worker's tasks over time, for one run;
- ``allocation.png``: tasks per worker;
- ``report.md``: the table, the scaling efficiency and the machine.

A run's wall time is from its first submission to its last result, as the client sees it,
so the throughput includes every overhead of the service. The ideal is ``slots / duration``
(a slot is one worker thread; the service's workers run one task at a time).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import JustDistributeError, MissingExtraError

__all__ = [
    "RunSummary",
    "TaskRecord",
    "configure",
    "main",
    "read_csv",
    "run_loadtest",
    "summarize",
]

log = logging.getLogger("just_distribute")

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


# -- the tasks (run on the service's workers) -------------------------------------------
def sleep_task(duration: float) -> tuple[str, float, float]:
    """Sleep ``duration`` seconds; return the worker's address, start and end time."""
    started = time.time()
    time.sleep(duration)
    return _worker_address(), started, time.time()


def cpu_task(duration: float) -> tuple[str, float, float]:
    """Burn ``duration`` seconds of this thread's CPU; return worker, start and end time."""
    started = time.time()
    until = time.thread_time() + duration
    x = 0
    while time.thread_time() < until:
        for i in range(2_000):  # check the clock only every few thousand steps
            x = (x * 31 + i) % 1_000_003
    return _worker_address(), started, time.time()


def _worker_address() -> str:
    from distributed import get_worker

    return str(get_worker().address)


# -- command line -----------------------------------------------------------------------
def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 1,2,4; got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected counts of at least 1, such as 1,2,4; got {text!r}"
        )
    return values


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds such as 0.05; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 such as 0.05; got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the load test's command-line arguments on ``parser``."""
    parser.add_argument(
        "--workers", type=_counts, default=None, metavar="N,N,...",
        help="worker counts to start the service with, one run each (default 1,2,4; "
        "ignored with --address)",
    )
    parser.add_argument(
        "--tasks", type=_counts, default=[50, 200, 1000], metavar="N,N,...",
        help="task counts to submit for each worker count (default 50,200,1000)",
    )
    parser.add_argument(
        "--duration", type=_positive, default=0.05, metavar="SECONDS",
        help="seconds each task sleeps or computes (default 0.05)",
    )
    parser.add_argument(
        "--kind", choices=("sleep", "cpu"), default="sleep",
        help="sleep (waits, like I/O) or cpu (burns CPU) (default sleep)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest-out"), metavar="DIR",
        help="where to write results.csv, the plots and report.md (default ./loadtest-out)",
    )
    parser.add_argument(
        "--address", default=None, metavar="ADDRESS",
        help="measure a running function service (its scheduler address) instead of "
        "starting one",
    )
    parser.add_argument(
        "--connect-timeout", type=_positive, default=10.0, metavar="SECONDS",
        help="seconds to wait for the service to answer (default 10)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the load test described by the parsed ``args``; return the exit code."""
    try:
        summaries = run_loadtest(
            workers=args.workers, tasks=args.tasks, duration=args.duration, kind=args.kind,
            out=args.out, address=args.address, echo=print, progress=True,
            connect_timeout=args.connect_timeout,
        )
    except MissingExtraError as exc:
        print(f"just-distribute loadtest: {exc}", file=sys.stderr)
        return 2
    except (JustDistributeError, OSError, TimeoutError) as exc:
        # The service did not start, or the one at --address cannot be reached.
        hint = (
            f". Is a service running at --address {args.address}? Start one with "
            "`just-distribute cluster`, or leave out --address to start one per worker count."
            if args.address is not None and not isinstance(exc, JustDistributeError)
            else ""
        )
        print(f"just-distribute loadtest: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    print()
    print(format_table(summaries, markdown=False))
    print(f"\nwrote {args.out}/: {', '.join(OUTPUTS)}")
    return 0


# -- running ----------------------------------------------------------------------------
def _require() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("the load test", "loadtest", "distributed") from exc
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("the load test", "loadtest", "matplotlib") from exc


@contextlib.contextmanager
def _service(
    workers: int | None, address: str | None, echo: Callable[[str], None]
) -> Iterator[str]:
    """The scheduler address of the service to measure: started here, or ``address``."""
    if address is not None:
        yield address
        return
    from .service import start_service

    assert workers is not None
    with start_service(workers) as svc:
        echo(f"service with {workers} worker{'s' if workers != 1 else ''} at {svc.address}")
        echo(f"  dashboard: {svc.dashboard_url or 'off (needs bokeh)'}")
        echo(f"  metrics:   {svc.metrics_url or 'off (needs prometheus-client)'}")
        yield svc.address


def run_loadtest(
    *,
    workers: Sequence[int] | None = None,
    tasks: Sequence[int] = (50, 200, 1000),
    duration: float = 0.05,
    kind: str = "sleep",
    out: Path | str = "loadtest-out",
    address: str | None = None,
    echo: Callable[[str], None] = log.info,
    progress: bool = False,
    connect_timeout: float = 10.0,
) -> list[RunSummary]:
    """Run the load test and write its files into ``out``; return one summary per run.

    Args:
        workers: worker counts to start the service with (default 1, 2, 4); ignored when
            ``address`` is given.
        tasks: task counts to submit to each service.
        duration: seconds each task sleeps or computes.
        kind: ``"sleep"`` or ``"cpu"``.
        out: the directory for the files (created if missing).
        address: the scheduler address of a running service to measure instead.
        echo: where the messages go (the dashboard and metrics addresses).
        progress: show a progress bar for each run (its rate is the run's throughput).
        connect_timeout: seconds to wait for the service to answer.

    Raises:
        MissingExtraError: dask.distributed or matplotlib is not installed.
        ValueError: a bad ``kind``, count or duration.
    """
    if kind not in ("sleep", "cpu"):
        raise ValueError(f'kind must be "sleep" or "cpu", got {kind!r}')
    if not tasks or any(t < 1 for t in tasks) or duration < 0:
        raise ValueError(f"tasks must be counts >= 1 and duration >= 0; got {tasks}, {duration}")
    _require()
    from tqdm.auto import tqdm

    counts: list[int | None] = [None] if address is not None else list(workers or (1, 2, 4))
    out = Path(out)
    records: list[TaskRecord] = []
    run = 0
    try:
        for n in counts:
            with _service(n, address, echo) as addr, _client(addr, connect_timeout) as client:
                if address is not None:
                    echo(f"service at {addr}")
                    echo(f"  dashboard: {client.dashboard_link}")
                    echo(f"  metrics:   {_metrics_url(client.dashboard_link)}")
                n_workers, slots = _wait_for_workers(client, n)
                task_fn = sleep_task if kind == "sleep" else cpu_task
                # Warm-up: every worker loads the task function before anything is timed.
                client.gather(
                    [client.submit(task_fn, 0.0, pure=False) for _ in range(2 * slots)]
                )
                for count in tasks:
                    # One bar per run: its rate is the run's throughput, live.
                    label = f"{n_workers} worker" + ("s" if n_workers != 1 else "")
                    with tqdm(total=count, unit="task", desc=label, disable=not progress,
                              dynamic_ncols=True) as bar:
                        records.extend(_one_run(
                            client, task_fn, run, n_workers, slots, count, kind, duration,
                            bar.update,
                        ))
                    run += 1
    except KeyboardInterrupt:
        if records:  # keep the runs that finished
            write_files(out, records)
        raise
    write_files(out, records)
    return summarize(records)


@contextlib.contextmanager
def _client(address: str, timeout: float) -> Iterator[Any]:
    from distributed import Client

    client: Any = Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        # Closing can race dask's batched sends, which dask reports at INFO on stderr.
        dask_log = logging.getLogger("distributed")
        level = dask_log.level
        dask_log.setLevel(max(level, logging.WARNING))
        try:
            client.close(timeout=10)
        finally:
            dask_log.setLevel(level)


def _wait_for_workers(client: Any, n: int | None) -> tuple[int, int]:
    """Wait until the service has ``n`` workers (if known); return workers and slots."""
    if n is not None:
        client.wait_for_workers(n, timeout=120)
    info = client.scheduler_info(n_workers=-1)["workers"]
    if not info:
        client.wait_for_workers(1, timeout=120)
        info = client.scheduler_info(n_workers=-1)["workers"]
    return len(info), sum(int(w.get("nthreads", 1)) for w in info.values())


def _metrics_url(dashboard: str) -> str:
    base = dashboard.rsplit("/status", 1)[0] if dashboard.endswith("/status") else dashboard
    return base.rstrip("/") + "/metrics"


def _one_run(
    client: Any,
    task_fn: Callable[[float], tuple[str, float, float]],
    run: int,
    workers: int,
    slots: int,
    count: int,
    kind: str,
    duration: float,
    advance: Callable[[int], object],
) -> list[TaskRecord]:
    from distributed import as_completed

    submitted: dict[str, tuple[int, float]] = {}
    futures = []
    for i in range(count):
        key = f"loadtest-{run}-{i}-{time.time_ns()}"
        submitted[key] = (i, time.time())
        futures.append(client.submit(task_fn, duration, key=key, pure=False))
    records = []
    done = as_completed(futures, with_results=True)  # type: ignore[no-untyped-call]
    for fut, (worker, started, ended) in done:
        received = time.time()
        i, sent = submitted[fut.key]
        records.append(TaskRecord(
            run, workers, slots, count, kind, duration, i, worker, sent, started, ended, received
        ))
        advance(1)
    del futures
    records.sort(key=lambda r: r.task)
    return records


# -- figures from the records -----------------------------------------------------------
def summarize(records: Sequence[TaskRecord]) -> list[RunSummary]:
    """One :class:`RunSummary` per run, computed from the task records only."""
    runs: dict[int, list[TaskRecord]] = {}
    for r in records:
        runs.setdefault(r.run, []).append(r)
    out = []
    for run, rows in sorted(runs.items()):
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


# -- files ------------------------------------------------------------------------------
def write_files(out: Path, records: Sequence[TaskRecord]) -> None:
    """Write results.csv, the three plots and report.md into ``out``."""
    from ._loadtest_files import write_plots_and_report

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", records)
    write_plots_and_report(out, records)


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
