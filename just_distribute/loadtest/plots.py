"""The load test's plots and ``report.md``, drawn from its task records.

The figures use matplotlib's Agg canvas directly, never pyplot: no global backend switch,
no GUI, safe from any thread.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from just_distribute.config import usable_cpus
from just_distribute.loadtest.records import (
    Breakdown,
    RunSummary,
    TaskRecord,
    breakdown,
    format_table,
    summarize,
)

__all__ = ["machine", "write_plots_and_report"]


def write_plots_and_report(out: Path, records: Sequence[TaskRecord]) -> None:
    """Write throughput.png, timeline.png, allocation.png and report.md into ``out``."""
    summaries = summarize(records)
    timeline_run = _timeline_run(summaries)
    _plot_throughput(out / "throughput.png", summaries, records)
    _plot_timeline(out / "timeline.png", [r for r in records if r.run == timeline_run])
    _plot_allocation(out / "allocation.png", summaries, records)
    (out / "report.md").write_text(_report_md(summaries, records, timeline_run))


def _timeline_run(summaries: Sequence[RunSummary]) -> int:
    """The run drawn on the timeline: the most workers, then the most tasks."""
    return max(summaries, key=lambda s: (s.workers, s.tasks)).run


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_throughput(
    path: Path, summaries: Sequence[RunSummary], records: Sequence[TaskRecord]
) -> None:
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for count in sorted({s.tasks for s in summaries}):
        runs = sorted((s for s in summaries if s.tasks == count), key=lambda s: s.slots)
        ax.plot([s.workers for s in runs], [s.throughput for s in runs], "o-",
                label=f"{count} tasks")
    duration = records[0].duration
    if duration > 0:
        xs = sorted({s.workers for s in summaries})
        slots = {s.workers: s.slots for s in summaries}
        ax.plot(xs, [slots[x] / duration for x in xs], "k--",
                label=f"ideal (slots / {duration:g} s)")
    ax.set_xlabel("workers")
    ax.set_ylabel("tasks / s")
    ax.set_xticks(sorted({s.workers for s in summaries}))
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput of the function service ({records[0].kind} {duration:g} s tasks)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)


def _plot_timeline(path: Path, rows: Sequence[TaskRecord]) -> None:
    workers = sorted({r.worker for r in rows})
    t0 = min(r.submitted for r in rows)
    fig = _figure(9, 1.2 + 0.5 * len(workers))
    ax = fig.add_subplot()
    for y, w in enumerate(workers):
        spans = [(r.started - t0, max(r.ended - r.started, 1e-4)) for r in rows if r.worker == w]
        ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=f"C{y % 10}", edgecolors="white",
                       linewidth=0.3)
    ax.set_yticks(range(len(workers)), [_short(w) for w in workers])
    ax.set_xlabel("seconds since the first submission")
    first = rows[0]
    ax.set_title(f"Tasks on each worker: {_workers(first.workers)}, {first.tasks} tasks")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=100)


def _plot_allocation(
    path: Path, summaries: Sequence[RunSummary], records: Sequence[TaskRecord]
) -> None:
    most = max(s.tasks for s in summaries)
    runs = [s for s in summaries if s.tasks == most]
    fig = _figure(max(4.0, 3.2 * len(runs)), 3.8)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, s in zip(axes, runs, strict=True):
        per = Counter(r.worker for r in records if r.run == s.run)
        names = sorted(per)
        ax.bar(range(len(names)), [per[n] for n in names], color="C0")
        ax.axhline(s.tasks / s.workers, color="k", linestyle="--", linewidth=1,
                   label="even share")
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=45, ha="right")
        ax.set_title(_workers(s.workers))
        ax.set_ylabel("tasks")
    axes[0].legend()
    fig.suptitle(f"Tasks per worker ({most} tasks per run)")
    fig.savefig(path, dpi=100)


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def _short(address: str) -> str:
    return address.split("://", 1)[-1]


def machine() -> dict[str, str]:
    """A description of this machine, for the report."""
    import distributed

    info = {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "CPUs": f"{os.cpu_count()} (usable: {usable_cpus()})",
        "dask.distributed": str(getattr(distributed, "__version__", "?")),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        info["memory"] = f"{total / 2**30:.1f} GiB"
    with contextlib.suppress(OSError, AttributeError):
        info["load average (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _where_the_time_goes(
    parts: Sequence[Breakdown], summaries: Sequence[RunSummary]
) -> list[str]:
    """The report's account of each run's wall time: the ideal, then every overhead."""
    if not parts:
        return []
    by_run = {s.run: s for s in summaries}
    lines = [
        "",
        "## Where the time goes",
        "",
        "Each run's wall time, per slot, as a share of it: *ideal* is the tasks' own "
        "duration; *start* from the submission to a slot's first task (submitting, "
        "scheduling, first hand-over); *gaps* a slot idle between two of its tasks (the "
        "per-task round trip through the scheduler); *overrun* tasks running longer than "
        "asked (late wake-ups, a worker waiting for a CPU); *tail* a slot idle at the end "
        "while others still ran; *back* the last result's way to the client.",
        "",
        "| workers | tasks | wall s | ideal | start | gaps | overrun | tail | back |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in parts:
        s = by_run[b.run]
        shares = [b.ideal, b.start, b.gaps, b.overrun, b.tail, b.back]
        cells = " | ".join(f"{x / b.wall:.1%}" if b.wall > 0 else "-" for x in shares)
        lines.append(f"| {s.workers} | {s.tasks} | {b.wall:.3f} | {cells} |")
    return lines


def _report_md(
    summaries: Sequence[RunSummary], records: Sequence[TaskRecord], timeline_run: int
) -> str:
    first = records[0]
    tl = next(s for s in summaries if s.run == timeline_run)
    lines = [
        "# Load test of the function service",
        "",
        f"Each task {'sleeps' if first.kind == 'sleep' else 'burns CPU for'} "
        f"{first.duration:g} s. A run's wall time runs from its first submission to its last "
        "result, as the client sees it. *ideal/s* is slots / duration (a slot is one worker "
        "thread; the service's workers run one task at a time); *efficiency* is tasks/s "
        "against that ideal; *scaling* is tasks/s against the same task count on the fewest "
        "workers, times the worker ratio.",
        "",
        format_table(summaries, markdown=True),
        "",
        "## Scaling efficiency",
        "",
    ]
    for s in summaries:
        lines.append(
            f"- {_workers(s.workers)}, {s.tasks} tasks: {s.throughput:.1f} tasks/s of an ideal "
            f"{s.ideal:.1f} ({s.efficiency:.1%})"
        )
    lines += _where_the_time_goes(breakdown(records), summaries)
    cpus = usable_cpus()
    if first.kind == "sleep" and max(s.slots for s in summaries) > cpus:
        lines += [
            "",
            f"More slots than this machine's {cpus} CPUs is still a fair test here: a "
            "sleeping task holds its worker, not a CPU.",
        ]
    lines += [
        "",
        "## Plots",
        "",
        "![throughput](throughput.png)",
        "",
        f"Timeline of run {tl.run} ({_workers(tl.workers)}, {tl.tasks} tasks):",
        "",
        "![timeline](timeline.png)",
        "",
        "![allocation](allocation.png)",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += ["", f"Every task is in `results.csv` ({len(records)} rows).", ""]
    return "\n".join(lines)
