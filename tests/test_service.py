"""The function service: the command, its Python API, TLS, metrics, joining workers."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import distributed
import psutil
import pytest
from fixtures_cluster import read_announcement, service_command

from just_distribute import ClusterUnreachableError, compute_this, distribute
from just_distribute.config import resolve_options
from just_distribute.executors import get_executor
from just_distribute.service import ServiceHandle, configure, insecure_warning, main
from just_distribute.service import tls as _tls


def square(x: int) -> int:
    return x * x


def metered(x: int) -> int:
    return x + 1


def _workers(address: str) -> set[str]:
    with distributed.Client(address, set_as_default=False, timeout=30) as client:
        return {str(w["name"]) for w in client.scheduler_info()["workers"].values()}


def _scheduler_tick(dask_scheduler: Any) -> float:
    """Run on the scheduler: the interval of its event-loop health check."""
    return float(dask_scheduler._tick_interval)


def _timers_by_name(address: str) -> dict[str, tuple[Any, ...]]:
    """Each worker's (by name) timer settings, and the scheduler's health-check interval."""
    import dask.config

    keys = ("distributed.admin.tick.interval", "distributed.worker.profile.interval",
            "distributed.worker.memory.monitor-interval")
    with distributed.Client(address, set_as_default=False, timeout=30) as client:
        names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
        # dask.config.get: a function every worker can import (a joined worker cannot
        # import this test module).
        found = {key: client.run(dask.config.get, key) for key in keys}
        tick = client.run_on_scheduler(_scheduler_tick)
    out = {names[a]: tuple(found[key][a] for key in keys) for a in names}
    out["scheduler"] = (tick,)
    return out


def test_the_service_runs_dasks_timers_slowly(cluster_address: str) -> None:
    # dask's defaults (20 ms health checks, 10 ms stack samples) cost an idle worker
    # ~2.5% of a core; the service's scheduler and workers run slower ones.
    found = _timers_by_name(cluster_address)
    assert {"scheduler", "worker-0", "worker-1"} <= set(found)
    assert found["scheduler"] == (0.5,)
    for name in ("worker-0", "worker-1"):
        assert found[name] == ("500ms", "100ms", "500ms"), name


@pytest.mark.timeout(120)
def test_a_worker_its_nanny_restarts_runs_the_slow_timers_too(cluster_address: str) -> None:
    from just_distribute.executors.cluster_worker import exit_worker

    with distributed.Client(cluster_address, set_as_default=False, timeout=30) as client:
        before = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
        client.run(exit_worker, workers=[before["worker-1"]], wait=False)
        deadline = time.monotonic() + 90
        now = before
        while time.monotonic() < deadline:
            now = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
            if now.get("worker-1") not in (None, before["worker-1"]):
                break
            time.sleep(0.3)
    assert now.get("worker-1") not in (None, before["worker-1"])  # a fresh process
    assert _timers_by_name(cluster_address)["worker-1"] == ("500ms", "100ms", "500ms")


def _nannies(client: distributed.Client) -> dict[str, str]:
    """Each worker's name and the address of the nanny that runs it."""
    return {str(w["name"]): str(w["nanny"]) for w in client.scheduler_info()["workers"].values()}


def _wait_for_worker(client: distributed.Client, name: str, unlike: str, seconds: float) -> str:
    """Wait until worker ``name`` is back under an address other than ``unlike``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workers = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
        if workers.get(name) not in (None, unlike):
            return str(workers[name])
        time.sleep(0.2)
    raise AssertionError(f"{name} did not come back within {seconds:.0f}s: {workers}")


async def _close_nanny(dask_scheduler: Any, name: str) -> str:
    """Run on the scheduler, in the service's process: close the nanny of worker ``name``,
    as dask itself does when it gives a worker up."""
    from distributed import Nanny

    for nanny in list(Nanny._instances):
        if nanny.name == name and nanny.status.name == "running":
            await nanny.close(reason="closed by a test")
            return str(nanny.address)
    raise LookupError(name)


@pytest.mark.timeout(120)
def test_a_worker_whose_nanny_stopped_is_started_again(cluster_address: str) -> None:
    with distributed.Client(cluster_address, set_as_default=False, timeout=30) as client:
        before = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
        closed = client.run_on_scheduler(_close_nanny, name="worker-1")
        # Before: the service ran on with one worker fewer, for good.
        _wait_for_worker(client, "worker-1", before["worker-1"], 60)
        assert _nannies(client)["worker-1"] != closed  # a new nanny, not the closed one
    assert _timers_by_name(cluster_address)["worker-1"] == ("500ms", "100ms", "500ms")


@pytest.mark.timeout(120)
def test_a_restart_under_way_when_dask_checks_for_lost_workers_keeps_the_nanny(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from just_distribute.executors.cluster_worker import exit_worker
    from just_distribute.service import start_service

    # dask gives a worker up when none of its name is back this long after it left (15 s
    # by default): 50 ms lands the check inside every restart.
    monkeypatch.setenv("DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT", "50ms")
    with start_service(1) as service, distributed.Client(
        service.address, set_as_default=False, timeout=30
    ) as client:
        for _ in range(2):
            before = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
            nanny = _nannies(client)["worker-0"]
            client.run(exit_worker, workers=[before["worker-0"]], wait=False)
            _wait_for_worker(client, "worker-0", before["worker-0"], 60)
            time.sleep(0.5)  # past dask's check
            # Before: dask closed the nanny at the check; worker-0 never came back.
            assert _nannies(client) == {"worker-0": nanny}, service.log_text()


def test_a_dask_setting_of_the_user_wins_over_the_quiet_timers() -> None:
    import dask.config

    from just_distribute.service.serve import QUIET_TIMERS, quiet_timers

    before = {key: dask.config.get(key) for key in QUIET_TIMERS}
    with dask.config.set({"distributed.admin.tick.interval": "40ms"}), quiet_timers():
        assert dask.config.get("distributed.admin.tick.interval") == "40ms"
        assert dask.config.get("distributed.worker.profile.interval") == "100ms"
    assert {key: dask.config.get(key) for key in QUIET_TIMERS} == before  # only inside


def test_start_service_api(cluster_service: ServiceHandle) -> None:
    assert cluster_service.address.startswith("tcp://127.0.0.1:")
    assert cluster_service.running
    assert cluster_service.dashboard_url is not None
    assert cluster_service.dashboard_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(cluster_service.dashboard_url, timeout=30) as page:
        assert page.status == 200
    assert _workers(cluster_service.address) >= {"worker-0", "worker-1"}


def _memory_count(metrics_url: str, prefix: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=30) as page:
        text = page.read().decode()
    assert "dask_scheduler_tasks" in text
    for line in text.splitlines():
        if line.startswith("dask_scheduler_prefix_state_totals_total{") and (
            f'task_prefix_name="{prefix}"' in line and 'state="memory"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_counters_move_after_a_job(cluster_service: ServiceHandle) -> None:
    assert cluster_service.metrics_url is not None
    before = _memory_count(cluster_service.metrics_url, "metered-chunk")
    f = distribute(job="cluster", address=cluster_service.address, chunksize=5)(metered)
    assert f(range(20)) == list(range(1, 21))
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline and after < before + 4:
        after = _memory_count(cluster_service.metrics_url, "metered-chunk")
        time.sleep(0.2)
    assert after >= before + 4  # 20 calls in chunks of 5: four tasks


def test_insecure_hosts_are_warned_about() -> None:
    assert insecure_warning("127.0.0.1", None) is None
    assert insecure_warning("localhost", None) is None
    assert insecure_warning("::1", None) is None
    assert insecure_warning("0.0.0.0", object()) is None
    message = insecure_warning("0.0.0.0", None)
    assert message is not None and "--tls" in message


def test_partial_tls_files_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    assert main(parser.parse_args(["--tls-cert", "cert.pem"])) == 2
    assert "give all three" in capsys.readouterr().err


def test_worker_command_joins_and_leaves(cluster_address: str) -> None:
    cmd = [sys.executable, "-m", "just_distribute", "worker", cluster_address,
           "--workers", "1", "--name", "extra"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "extra-0" not in _workers(cluster_address):
            time.sleep(0.3)
        assert "extra-0" in _workers(cluster_address)
        assert _timers_by_name(cluster_address)["extra-0"] == ("500ms", "100ms", "500ms")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "extra-0" in _workers(cluster_address):
            time.sleep(0.3)
        assert "extra-0" not in _workers(cluster_address)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(240)
def test_tls_service_refuses_strangers_and_sigterm_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_dir = tmp_path / "tls"
    log = (tmp_path / "service.log").open("w")
    proc = subprocess.Popen(
        service_command("--workers", "1", "--port", "0", "--dashboard-port", "0",
                        "--tls", "--tls-dir", str(tls_dir)),
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))},
    )
    try:
        info = read_announcement(proc)
        address = info["scheduler"]
        assert address.startswith("tls://127.0.0.1:")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the service started no worker process"

        good = distribute(job="cluster", address=address, tls=str(tls_dir))(square)
        assert good(range(4)) == [0, 1, 4, 9]
        monkeypatch.setenv("JUST_DISTRIBUTE_TLS", str(tls_dir))
        assert distribute(job="cluster", address=address)(square)(range(3)) == [0, 1, 4]
        monkeypatch.delenv("JUST_DISTRIBUTE_TLS")
        assert compute_this(address=address, tls=str(tls_dir))(square)(7).run(timeout=60) == 49

        plain = distribute(job="cluster", address=address, connect_timeout=3)(square)
        with pytest.raises(ClusterUnreachableError, match="tls="):
            plain(range(2))
        stranger = _tls.generate(tmp_path / "other")  # a certificate from another CA
        wrong = distribute(job="cluster", address=address, tls=stranger, connect_timeout=3)
        with pytest.raises(ClusterUnreachableError):
            wrong(square)(range(2))

        # Let go of the connected client before the service goes away.
        get_executor(resolve_options(
            {"job": "cluster", "address": address, "tls": str(tls_dir)})).shutdown()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


_STOP_SCRIPT = """
from just_distribute import distribute
from just_distribute.service import start_service

def square(x: int) -> int:
    return x * x

if __name__ == "__main__":
    with start_service(1) as service:
        print(distribute(square, job="cluster", address=service.address)(range(4)))
    print("stopped")
"""


@pytest.mark.timeout(120)
def test_stopping_a_service_disconnects_its_clients_quietly(tmp_path: Path) -> None:
    script = tmp_path / "stop_service.py"
    script.write_text(_STOP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["[0,", "1,", "4,", "9]", "stopped"]
    # No client left trying to reconnect to the stopped scheduler at exit.
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _listening(pid: int) -> set[str]:
    """The IP addresses the process and its children listen on (TCP)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found: set[str] = set()
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add(conn.laddr.ip)
    return found


def test_worker_listens_only_where_it_reaches_the_scheduler(cluster_address: str) -> None:
    cmd = [sys.executable, "-m", "just_distribute", "worker", cluster_address,
           "--workers", "1", "--name", "quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "quiet-0" not in _workers(cluster_address):
            time.sleep(0.3)
        assert "quiet-0" in _workers(cluster_address)
        listening = _listening(proc.pid)
        assert listening and listening <= {"127.0.0.1"}, listening
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert proc.stderr is not None
        assert "warning" not in proc.stderr.read()  # loopback: nothing to warn about


def test_worker_on_all_interfaces_without_tls_warns(cluster_address: str) -> None:
    cmd = [sys.executable, "-m", "just_distribute", "worker", cluster_address,
           "--workers", "1", "--name", "loud", "--host", "0.0.0.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "joined ..." once it serves
        assert "joined 1 workers" in line and "0.0.0.0" in line
        assert "0.0.0.0" in _listening(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert proc.stderr is not None
        assert "without TLS" in proc.stderr.read()


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "just_distribute", *argv],
                          capture_output=True, text=True, timeout=60)


def _start(ident: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        service_command("--workers", "1", "--port", "0", "--dashboard-port", "0",
                        "--tls-ca", str(ident / "ca.pem"), "--tls-cert", str(ident / "cert.pem"),
                        "--tls-key", str(ident / "key.pem")),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))},
    )
    return proc, read_announcement(proc)["scheduler"]


def _stop(proc: subprocess.Popen[str]) -> None:
    get_executor_shutdown()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def get_executor_shutdown() -> None:
    from just_distribute.executors import shutdown_all

    shutdown_all()


@pytest.mark.timeout(300)
def test_tls_identities_per_role_one_refused_alone(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert _cli("tls", "ca", str(ca)).returncode == 0
    folders = {name: tmp_path / name for name in ("sched", "host-a", "alice", "bob")}
    folders["bob"].mkdir()
    (folders["bob"] / "key.pem").write_text("old")
    (folders["bob"] / "key.pem").chmod(0o644)  # a folder that already holds files
    for name, role in (("sched", "scheduler"), ("host-a", "worker"), ("alice", "client"),
                       ("bob", "client")):
        done = _cli("tls", "issue", str(folders[name]), "--ca", str(ca), "--role", role,
                    "--name", name, "--host", "127.0.0.1")
        assert done.returncode == 0, done.stderr
    for folder in folders.values():
        assert not (folder / "ca-key.pem").exists()
        assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (ca / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    bad = _cli("tls", "refuse", "nobody", "--ca", str(ca))
    assert bad.returncode == 2 and "nobody" in bad.stderr and "Traceback" not in bad.stderr

    proc, address = _start(folders["sched"], tmp_path)
    try:
        worker = subprocess.Popen(
            [sys.executable, "-m", "just_distribute", "worker", address, "--workers", "1",
             "--name", "host-a", "--tls", str(folders["host-a"])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        assert worker.stdout is not None and "joined 1" in worker.stdout.readline()
        for name in ("alice", "bob"):
            f = distribute(job="cluster", address=address, tls=str(folders[name]))(square)
            assert f(range(4)) == [0, 1, 4, 9]
        # A worker holding another CA's certificate: one line, exit 2, within its timeout.
        stranger = _tls.generate(tmp_path / "other-ca")
        started = time.monotonic()
        refused = _cli("worker", address, "--workers", "1", "--connect-timeout", "3",
                       "--tls-ca", stranger.ca, "--tls-cert", stranger.cert,
                       "--tls-key", stranger.key)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert address.removeprefix("tls://") in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert time.monotonic() - started < 30
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    finally:
        _stop(proc)

    done = _cli("tls", "refuse", "alice", "--ca", str(ca))
    assert done.returncode == 0, done.stderr
    shutil.copyfile(ca / "crl.pem", folders["sched"] / "crl.pem")  # as the docs say
    proc, address = _start(folders["sched"], tmp_path)
    try:
        refused = distribute(job="cluster", address=address, tls=str(folders["alice"]),
                             connect_timeout=3)(square)
        with pytest.raises(ClusterUnreachableError):
            refused(range(2))
        kept = distribute(job="cluster", address=address, tls=str(folders["bob"]))(square)
        assert kept(range(3)) == [0, 1, 4]  # not re-issued, still welcome
    finally:
        _stop(proc)


@pytest.mark.timeout(180)
def test_temporary_tls_keys_are_removed_at_stop() -> None:
    from just_distribute.service import start_service

    with start_service(1, tls=True) as service:
        assert service.tls is not None and service.address.startswith("tls://")
        folder = Path(service.tls.cert).parents[1]
        assert Path(service.tls.key).stat().st_mode & 0o777 == 0o600
        assert not (Path(service.tls.cert).parent / "ca-key.pem").exists()
        f = distribute(job="cluster", address=service.address, tls=service.tls)(square)
        assert f(range(3)) == [0, 1, 4]
    assert not folder.exists()


def test_worker_ctrl_c_exits_130(cluster_address: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "just_distribute", "worker", cluster_address, "--workers", "1",
         "--name", "interrupted"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and "joined 1" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
