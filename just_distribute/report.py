"""The run report: how long a run took and how its calls were spread over the workers.

``results, report = f.report(data)`` gives each call its own :class:`RunReport`, so the
same function can run in several threads at once. The engine records every chunk that
comes back (``record``) and closes the report when the run ends (``finish``).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

from just_distribute.updates import Update

__all__ = ["RunReport", "WorkerStats"]


@dataclass
class WorkerStats:
    """What one worker did in a run.

    Attributes:
        calls: calls it ran.
        busy: seconds it spent running them.
        chunks: chunks it received.
        share: its fraction of the run's calls (0..1), filled in when the run ends.
    """

    calls: int = 0
    busy: float = 0.0
    chunks: int = 0
    share: float = 0.0


@dataclass
class RunReport:
    """Wall time, number of calls, throughput and per-worker figures of one run.

    Attributes:
        function: the function's name.
        job: the job it ran on.
        workers: the number of workers available.
        calls: the calls run, summed over the workers (a retried call counts once per
            attempt; calls restored from a checkpoint are not run and do not count).
        wall: the run's wall time in seconds.
        per_worker: per worker name, its :class:`WorkerStats`.
        updates: per call index, the :class:`~just_distribute.Update` records its call
            published with :func:`~just_distribute.update`, in order (also those restored
            from a checkpoint).
        updates_dropped: records coalesced away because they came faster than the caller
            took them (the latest value of every name is never dropped).
    """

    function: str
    job: str
    workers: int
    calls: int = 0
    wall: float = 0.0
    per_worker: dict[str, WorkerStats] = field(default_factory=dict)
    updates: dict[int, list[Update]] = field(default_factory=dict)
    updates_dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, worker: str, calls: int, started: float, ended: float) -> None:
        """Count a finished chunk of ``calls`` calls run by ``worker``."""
        with self._lock:
            stats = self.per_worker.setdefault(worker, WorkerStats())
            stats.calls += calls
            stats.chunks += 1
            stats.busy += max(0.0, ended - started)
            self.calls += calls

    def add_updates(self, updates: list[Update], dropped: int = 0) -> None:
        """Keep ``updates``, each under its call's index; count ``dropped`` coalesced ones."""
        with self._lock:
            for u in updates:
                self.updates.setdefault(u.index, []).append(u)
            self.updates_dropped += dropped

    def finish(self, wall: float) -> None:
        """Close the report with the run's wall time."""
        with self._lock:
            self.wall = wall
            for stats in self.per_worker.values():
                stats.share = stats.calls / self.calls if self.calls else 0.0

    @property
    def throughput(self) -> float:
        """Calls per second over the run's wall time."""
        return self.calls / self.wall if self.wall > 0 else 0.0

    @property
    def busy(self) -> float:
        """Seconds the workers spent running calls, summed over the workers."""
        with self._lock:
            return sum(s.busy for s in self.per_worker.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON, logs or a data frame)."""
        with self._lock:
            return {
                "function": self.function,
                "job": self.job,
                "workers": self.workers,
                "calls": self.calls,
                "wall": self.wall,
                "throughput": self.throughput,
                "per_worker": {
                    name: dataclasses.asdict(stats)
                    for name, stats in sorted(self.per_worker.items())
                },
                "updates": {
                    index: [dataclasses.asdict(u) for u in records]
                    for index, records in sorted(self.updates.items())
                },
                "updates_dropped": self.updates_dropped,
            }

    def table(self) -> str:
        """The report as a plain-text table, one row per worker.

        *busy s* is the time the worker spent in calls; *share* its fraction of the calls;
        *util* its busy time over the run's wall time.
        """
        lines = [
            f"{self.function} on job={self.job!r} with {self.workers} workers: "
            f"{self.calls} calls in {self.wall:.3f} s ({self.throughput:,.1f} calls/s)",
            f"{'worker':<28} {'calls':>9} {'chunks':>7} {'busy s':>9} {'share':>7} {'util':>6}",
        ]
        for name, s in sorted(self.per_worker.items()):
            util = s.busy / self.wall if self.wall > 0 else 0.0
            lines.append(
                f"{name[:28]:<28} {s.calls:>9} {s.chunks:>7} {s.busy:>9.3f} "
                f"{s.share:>6.1%} {util:>6.1%}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
