"""The command line: ``just-distribute demo --quick`` and ``python -m just_distribute``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


# -- command-line hygiene: one line naming the cause, exit 2; Ctrl-C exits 130 -------------
def _one_line_failure(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


@pytest.mark.parametrize("argv, needle", [
    (["cluster", "--workers", "0"], "at least 1"),
    (["cluster", "--workers", "-3"], "at least 1"),
    (["cluster", "--port", "70000"], "no TCP port"),
    (["cluster", "--dashboard-port", "-1"], "no TCP port"),
    (["worker", "tcp://127.0.0.1:8786", "--workers", "0"], "at least 1"),
])
def test_bad_counts_and_ports_are_refused(argv: list[str], needle: str) -> None:
    done = _run(sys.executable, "-m", "just_distribute", *argv)
    _one_line_failure(done, needle)


def test_cluster_on_a_port_in_use_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        started = time.monotonic()
        done = _run(sys.executable, "-m", "just_distribute", "cluster", "--workers", "1",
                    "--port", str(port), "--dashboard-port", "0")
    _one_line_failure(done, f"port {port}", "in use")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert time.monotonic() - started < 30


def test_cluster_on_a_foreign_host_is_one_line() -> None:
    done = _run(sys.executable, "-m", "just_distribute", "cluster", "--workers", "1",
                "--host", "192.0.2.1", "--port", "0", "--dashboard-port", "0")
    _one_line_failure(done, "192.0.2.1")


def test_cluster_with_a_file_that_is_no_certificate_is_one_line(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not a certificate\n")
    done = _run(sys.executable, "-m", "just_distribute", "cluster", "--workers", "1",
                "--port", "0", "--dashboard-port", "0", "--tls-ca", str(tmp_path / "ca.pem"),
                "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    _one_line_failure(done, "certificate")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    debug = _run(sys.executable, "-m", "just_distribute", "--debug", "cluster", "--workers",
                 "1", "--port", "0", "--dashboard-port", "0",
                 "--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "cert.pem"),
                 "--tls-key", str(tmp_path / "key.pem"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_worker_against_nothing_is_one_line_within_the_connect_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers
        port = s.getsockname()[1]
        started = time.monotonic()
        done = _run(sys.executable, "-m", "just_distribute", "worker",
                    f"tcp://127.0.0.1:{port}", "--connect-timeout", "2")
    _one_line_failure(done, f"127.0.0.1:{port}")
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("address", ["nonsense", "http://127.0.0.1:8787"])
def test_worker_with_a_malformed_address_is_one_line(address: str) -> None:
    done = _run(sys.executable, "-m", "just_distribute", "worker", address)
    _one_line_failure(done, "address=")


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "just_distribute", "cluster", "--workers", "1", "--port", "0",
         "--dashboard-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=env, cwd=tmp_path, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            if "service ready" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_cli_page_matches_the_real_help() -> None:
    import re

    from just_distribute.cli import build_parser

    parser = build_parser()
    helps = [parser.format_help()]
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for sub in actions[0].choices.values():  # type: ignore[attr-defined]
        helps.append(sub.format_help())
        for nested in sub._actions:
            if nested.__class__.__name__ == "_SubParsersAction":
                helps.extend(p.format_help() for p in nested.choices.values())
    real = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", "\n".join(helps))) - {"--help"}
    page = (ROOT / "docs" / "guide" / "cli.md").read_text()
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", page)) - {"--help"}
    assert real - documented == set(), "options missing from docs/guide/cli.md"
    assert documented - real == set(), "docs/guide/cli.md names options that do not exist"
