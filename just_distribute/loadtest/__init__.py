"""The load test of the function service: records, the run, the plots, the command.

- :mod:`~just_distribute.loadtest.records`: one row per task, summaries, table, CSV;
- :mod:`~just_distribute.loadtest.run`: starts (or reaches) the service and submits tasks;
- :mod:`~just_distribute.loadtest.plots`: the PNG plots and ``report.md`` (matplotlib);
- :mod:`~just_distribute.loadtest.command`: ``just-distribute loadtest``.
"""

from __future__ import annotations

from just_distribute.loadtest.records import (
    OUTPUTS,
    Breakdown,
    RunSummary,
    TaskRecord,
    breakdown,
    format_table,
    read_csv,
    summarize,
    write_csv,
)
from just_distribute.loadtest.run import run_loadtest, write_files

__all__ = [
    "OUTPUTS",
    "Breakdown",
    "RunSummary",
    "TaskRecord",
    "breakdown",
    "format_table",
    "read_csv",
    "run_loadtest",
    "summarize",
    "write_csv",
    "write_files",
]
