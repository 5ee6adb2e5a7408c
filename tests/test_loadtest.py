"""The load test: a real, small run against the real function service."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from just_distribute import cli, loadtest
from just_distribute.loadtest import command as loadtest_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Run:
    """The outcome of one load test command: exit code, output, its directory."""

    def __init__(self, code: int, out: str, err: str, directory: Path) -> None:
        self.code = code
        self.out = out
        self.err = err
        self.dir = directory


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadtest_command.configure(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``just-distribute loadtest --workers 1,2 --tasks 20 --duration 0.01``, run once."""
    directory = tmp_path_factory.mktemp("loadtest") / "out"
    argv = ["loadtest", "--workers", "1,2", "--tasks", "20", "--duration", "0.01",
            "--out", str(directory)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)  # the `just-distribute` command, in this process
    return Run(code, out.getvalue(), err.getvalue(), directory)


def rows_of(run: Run) -> list[dict[str, str]]:
    with (run.dir / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(100)
def test_every_file_is_written(small_run: Run) -> None:
    assert small_run.code == 0, small_run.err
    for name in loadtest.OUTPUTS:
        assert (small_run.dir / name).stat().st_size > 0, name


def test_the_csv_has_one_row_per_task_and_every_task_names_a_worker(small_run: Run) -> None:
    rows = rows_of(small_run)
    assert len(rows) == 40  # two worker counts x 20 tasks
    by_run: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    assert sorted(by_run) == ["0", "1"]
    for run_rows in by_run.values():
        workers = int(run_rows[0]["workers"])
        assert sorted(int(r["task"]) for r in run_rows) == list(range(20))
        names = {r["worker"] for r in run_rows}
        assert all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", n) for n in names)
        assert 1 <= len(names) <= workers
        for r in run_rows:
            submitted, started, ended, received = (
                float(r[k]) for k in ("submitted", "started", "ended", "received")
            )
            assert started <= ended <= received
            assert ended - started >= 0.01 * 0.9  # each task slept its duration
            assert submitted <= received
    assert {int(rs[0]["workers"]) for rs in by_run.values()} == {1, 2}


def test_the_plots_are_real_images(small_run: Run) -> None:
    from matplotlib import image

    for name in ("throughput.png", "timeline.png", "allocation.png"):
        path = small_run.dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = image.imread(str(path))
        height, width = pixels.shape[:2]
        assert height >= 200 and width >= 300, (name, pixels.shape)
        assert pixels.std() > 0.01, name  # something is drawn, not a blank canvas


def test_the_report_numbers_match_the_csv(small_run: Run) -> None:
    rows = rows_of(small_run)
    report = (small_run.dir / "report.md").read_text()
    first_table = report.split("## Where the time goes", 1)[0]
    table = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in first_table.splitlines()
        if re.match(r"\|\s*\d", line)
    ]
    assert len(table) == 2
    for cells in table:
        workers, tasks, wall, tput, ideal, _eff, _scaling, used, spread = cells[:9]
        mine = [r for r in rows if r["workers"] == workers]
        assert int(tasks) == len(mine) == 20
        first = min(float(r["submitted"]) for r in mine)
        last = max(float(r["received"]) for r in mine)
        assert wall == f"{last - first:.3f}"
        assert tput == f"{20 / (last - first):.1f}"
        assert ideal == f"{int(workers) / 0.01:.1f}"
        per = Counter(r["worker"] for r in mine)
        assert int(used) == len(per)
        low = min(per.values()) if len(per) >= int(workers) else 0
        assert spread == f"{low}-{max(per.values())}"
    assert "## Machine" in report and "CPUs" in report
    assert "![throughput](throughput.png)" in report


def test_the_command_prints_addresses_table_and_progress(small_run: Run) -> None:
    out = small_run.out
    assert out.count("dashboard: http://") == 2  # one service per worker count
    assert len(re.findall(r"metrics: +http://\S+/metrics", out)) == 2
    assert "tasks/s" in out and "efficiency" in out
    assert "20/20" in small_run.err  # the progress bar reached the end
    assert "Traceback" not in small_run.err


def test_summaries_read_back_from_the_csv(small_run: Run) -> None:
    summaries = loadtest.summarize(loadtest.read_csv(small_run.dir / "results.csv"))
    assert [(s.workers, s.tasks) for s in summaries] == [(1, 20), (2, 20)]
    assert all(0 < s.efficiency <= 1.0 for s in summaries)
    assert loadtest.format_table(summaries, markdown=True) in (
        small_run.dir / "report.md"
    ).read_text()


@pytest.mark.timeout(100)
def test_a_running_service_with_cpu_tasks(cluster_address: str, tmp_path: Path) -> None:
    messages: list[str] = []
    summaries = loadtest.run_loadtest(
        tasks=[12], duration=0.01, kind="cpu", out=tmp_path, address=cluster_address,
        echo=messages.append,
    )
    assert [(s.workers, s.slots, s.tasks) for s in summaries] == [(2, 2, 12)]
    records = loadtest.read_csv(tmp_path / "results.csv")
    assert len(records) == 12 and {r.kind for r in records} == {"cpu"}
    assert all(r.ended - r.started >= 0.01 * 0.9 for r in records)
    assert any(m.startswith("service at " + cluster_address) for m in messages)
    assert any("/metrics" in m for m in messages)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--workers", "0"], "at least 1"),
        (["--tasks", "1,x"], "comma-separated"),
        (["--duration", "-1"], "seconds >= 0"),
        (["--kind", "gpu"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_defaults() -> None:
    args: Any = parse([])
    assert (args.workers, args.tasks, args.duration, args.kind) == (None, [50, 200, 1000], 0.05,
                                                                    "sleep")
    assert args.out == Path("loadtest-out") and args.address is None
    assert args.connect_timeout == 10.0


@pytest.mark.timeout(60)
def test_an_unreachable_address_is_a_message_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a free port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    code = cli.main(["loadtest", "--address", f"tcp://127.0.0.1:{port}", "--tasks", "5",
                     "--out", str(out), "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"tcp://127.0.0.1:{port}" in err and "just-distribute cluster" in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing measured, nothing written


def _record(task: int, worker: str, started: float, ended: float, received: float) -> Any:
    return loadtest.TaskRecord(0, 2, 2, 4, "sleep", 1.0, task, worker, 0.0, started, ended,
                               received)


def test_the_breakdown_accounts_for_every_second_of_a_run() -> None:
    # Two slots, four 1 s tasks (ideal 2 s). Slot a: starts at 0.5, idles 0.25 between its
    # tasks, one task runs 0.25 over; slot b: starts at 1.0, ends 0.5 before a does.
    records = [
        _record(0, "a", 0.5, 1.5, 1.6), _record(1, "a", 1.75, 3.0, 3.1),
        _record(2, "b", 1.0, 2.0, 2.1), _record(3, "b", 2.0, 2.5, 2.6),
    ]
    (b,) = loadtest.breakdown(records)
    assert b.wall == pytest.approx(3.1)
    assert b.ideal == pytest.approx(2.0)
    assert b.start == pytest.approx((0.5 + 1.0) / 2)
    assert b.gaps == pytest.approx(0.25 / 2)
    assert b.overrun == pytest.approx((0.25 - 0.5) / 2)  # b's second task ran short
    assert b.tail == pytest.approx(0.5 / 2)
    assert b.back == pytest.approx(0.1)
    assert b.ideal + b.start + b.gaps + b.overrun + b.tail + b.back == pytest.approx(b.wall)


def test_a_slot_that_ran_nothing_counts_as_idle_from_the_start() -> None:
    records = [_record(0, "a", 0.0, 1.0, 1.0), _record(1, "a", 1.0, 2.0, 2.0)]
    (b,) = loadtest.breakdown(records)
    assert b.start == pytest.approx(2.0 / 2)  # slot b idle for the whole 2 s
    assert b.ideal + b.start + b.gaps + b.overrun + b.tail + b.back == pytest.approx(b.wall)


def test_the_report_says_where_the_time_goes(small_run: Run) -> None:
    records = loadtest.read_csv(small_run.dir / "results.csv")
    parts = loadtest.breakdown(records)
    assert [b.run for b in parts] == [0, 1]
    for b in parts:
        total = b.ideal + b.start + b.gaps + b.overrun + b.tail + b.back
        assert total == pytest.approx(b.wall, abs=1e-6)
        assert b.ideal == pytest.approx(20 * 0.01 / (b.run + 1))
    report = (small_run.dir / "report.md").read_text()
    section = report.split("## Where the time goes", 1)[1].split("##", 1)[0]
    lines = [line for line in section.splitlines() if re.match(r"\|\s*\d", line)]
    assert [line.split("|")[1].strip() for line in lines] == ["1", "2"]
    for line, b in zip(lines, parts, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == f"{b.wall:.3f}" and cells[3] == f"{b.ideal / b.wall:.1%}"


def test_results_come_back_for_every_task_of_a_big_batch(
    cluster_address: str, tmp_path: Path
) -> None:
    # The run submits one graph and fetches results in batches: none is lost or doubled.
    (summary,) = loadtest.run_loadtest(
        tasks=[300], duration=0.0, out=tmp_path, address=cluster_address,
        echo=lambda _m: None,
    )
    records = loadtest.read_csv(tmp_path / "results.csv")
    assert summary.tasks == 300
    assert sorted(r.task for r in records) == list(range(300))
    assert all(r.submitted <= r.started <= r.ended <= r.received for r in records)


def test_no_breakdown_when_a_worker_has_several_slots() -> None:
    # Two threads on one worker overlap their tasks: there is no per-slot account of them.
    records = [
        loadtest.TaskRecord(0, 1, 2, 2, "sleep", 1.0, i, "a", 0.0, 0.0, 1.0, 1.0)
        for i in range(2)
    ]
    assert loadtest.breakdown(records) == []
    assert loadtest.summarize(records)[0].efficiency == pytest.approx(1.0)
