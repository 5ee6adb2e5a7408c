"""The command line: ``just-distribute demo --quick`` and ``python -m just_distribute``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "just-distribute"


def _cluster_importable() -> bool:
    from just_distribute import demo

    return demo._cluster_available() is None


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JUST_DISTRIBUTE_JOB", None)
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.mark.timeout(150)
def test_demo_quick_runs_every_job_and_prints_the_table() -> None:
    done = _run(str(SCRIPT), "demo", "--quick", timeout=140)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in {"cpu", "io", "web"} and len(parts) >= 8:
            rows[(parts[0], parts[3])] = parts
    expected = {("cpu", "compute"), ("io", "io"), ("web", "web")}
    if _cluster_importable():
        expected.add(("cpu", "cluster"))
    assert expected <= set(rows), done.stdout
    for parts in rows.values():
        assert parts[7] == "yes"  # the distributed run returned the serial results
        assert parts[6].endswith("x")  # a speedup
    assert "speedup" in done.stdout
    assert "%|" in done.stderr  # the progress bar drew


def test_python_m_help_lists_the_commands() -> None:
    done = _run(sys.executable, "-m", "just_distribute", "--help")
    assert done.returncode == 0, done.stderr
    for command in ("demo", "cluster", "worker", "loadtest"):
        assert command in done.stdout


def test_python_m_demo_help() -> None:
    done = _run(sys.executable, "-m", "just_distribute", "demo", "--help")
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--no-cluster" in done.stdout


def test_version_prints_the_package_version() -> None:
    import just_distribute

    python_m = [sys.executable, "-m", "just_distribute"]
    for argv in ([str(SCRIPT), "--version"], [*python_m, "--version"]):
        done = _run(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"just-distribute {just_distribute.__version__}"


def test_help_lists_version() -> None:
    done = _run(str(SCRIPT), "--help")
    assert done.returncode == 0, done.stderr
    assert "--version" in done.stdout


def test_unknown_command_fails_with_usage() -> None:
    done = _run(str(SCRIPT), "nonsense")
    assert done.returncode == 2
    assert "usage" in done.stderr
