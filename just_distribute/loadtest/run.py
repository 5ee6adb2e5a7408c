"""The load test: the function service's throughput, and how it scales.

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

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from just_distribute.errors import MissingExtraError
from just_distribute.loadtest.records import RunSummary, TaskRecord, summarize, write_csv

__all__ = ["cpu_task", "run_loadtest", "sleep_task", "write_files"]

log = logging.getLogger("just_distribute")








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
    from just_distribute.service.launch import start_service

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

    # One graph for the whole run (client.map), not one message per task: submitting task
    # by task costs the client ~1 ms each, which at 32 workers x 20 tasks/s is most of the
    # budget of a core. Results are fetched in batches of those done, one request each,
    # not one request per task.
    keys = [f"loadtest-{run}-{i}-{time.time_ns()}" for i in range(count)]
    index = {key: i for i, key in enumerate(keys)}
    sent = time.time()
    futures = client.map(task_fn, [duration] * count, key=keys, pure=False)
    records = []
    for batch in as_completed(futures).batches():  # type: ignore[no-untyped-call]
        results = client.gather(batch)
        received = time.time()
        for fut, (worker, started, ended) in zip(batch, results, strict=True):
            records.append(TaskRecord(
                run, workers, slots, count, kind, duration, index[fut.key], worker, sent,
                started, ended, received,
            ))
        advance(len(batch))
    del futures
    records.sort(key=lambda r: r.task)
    return records








# -- files ------------------------------------------------------------------------------
def write_files(out: Path, records: Sequence[TaskRecord]) -> None:
    """Write results.csv, the three plots and report.md into ``out``."""
    from just_distribute.loadtest.plots import write_plots_and_report

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", records)
    write_plots_and_report(out, records)




