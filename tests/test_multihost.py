"""The cluster across machines, for real: network namespaces with their own addresses.

Five namespaces made (and deleted) by these tests, joined by veth pairs to a bridge in one
of them, 10.77.0.0/24, no loopback shortcut and no traffic outside them::

    switch  (bridge)
      +-- sched   10.77.0.2   the dask scheduler
      +-- host1   10.77.0.3   `just-distribute worker`, cwd and PYTHONPATH without the caller's code
      +-- host2   10.77.0.4   the same
      +-- client  10.77.0.5   the caller: a script with __main__ functions and a tasks.py beside it

This is the two-machine walk of docs/recipes/cluster.md, automated. The client prints what
it measured as JSON; the test checks it (and reports the times with ``-s``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fixtures_cluster import DASK, bare_env, stop_process_groups

from just_distribute.service import identities

NET = "10.77.0"
ADDRESSES = {"sched": 2, "host1": 3, "host2": 4, "client": 5}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Hosts:
    """The namespaces of one test run (names made unique by the test's process id)."""

    def __init__(self) -> None:
        tag = f"jd{os.getpid() % 100000}"
        self.switch = f"{tag}sw"
        self.ns = {name: f"{tag}{name}" for name in ADDRESSES}
        self.procs: list[subprocess.Popen[str]] = []
        _ip("netns", "add", self.switch)
        try:
            self._wire(tag)
        except BaseException:
            self.delete()
            raise

    def _wire(self, tag: str) -> None:
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (name, ns) in enumerate(self.ns.items()):
            _ip("netns", "add", ns)
            peer = f"{tag}p{i}"
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer,
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", peer, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    @staticmethod
    def addr(name: str) -> str:
        return f"{NET}.{ADDRESSES[name]}"

    def start(self, name: str, argv: list[str], cwd: Path, **kw: object) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace ``name``, from ``cwd``, without the tests."""
        out = open(cwd / f"{name}-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[name], *argv], cwd=cwd, env=bare_env(),
            stdout=kw.get("stdout", out), stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, name: str, argv: list[str], cwd: Path, timeout: float) -> str:
        """Run ``argv`` in namespace ``name`` to its end; return its standard output."""
        done = subprocess.run(["ip", "netns", "exec", self.ns[name], *argv], cwd=cwd,
                              env=bare_env(), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout

    def stop_all(self) -> None:
        stop_process_groups(self.procs)
        self.procs.clear()

    def delete(self) -> None:
        self.stop_all()
        for ns in [*self.ns.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _why_no_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs these as root)"
    probe = f"jdprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _why_no_namespaces()
    if reason is not None:
        pytest.skip(reason)
    made = Hosts()
    try:
        yield made
    finally:
        made.delete()


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float,
                   before: list[str] | None = None) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if needle in line:
            return line
        if before is not None:
            before.append(line)
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no {needle!r} within {timeout}s (exit {proc.poll()})")


def _listening(pid: int) -> set[str]:
    """The IP addresses listened on in the network namespace of ``pid`` (TCP, v4 and v6).

    Read from /proc/PID/net/tcp*, which show that namespace's sockets; only this test's
    processes live in it.
    """
    found: set[str] = set()
    for name, size in (("tcp", 4), ("tcp6", 16)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                raw = bytes.fromhex(fields[1].split(":")[0])
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def _workers(hosts: Hosts, address: str, where: Path, *tls: str) -> None:
    for name in ("host1", "host2"):
        proc = hosts.start(name, [sys.executable, "-m", "just_distribute", "worker", address,
                                  "--workers", "1", "--name", name, *tls], where,
                           stdout=subprocess.PIPE)
        line = _wait_for_line(proc, "joined", 90)
        # Listening on the interface that reaches the scheduler, nothing else.
        assert f"listening on {hosts.addr(name)}" in line, line
        assert _listening(proc.pid) == {hosts.addr(name)}


_TASKS = """
import os

class Shape:
    def __init__(self, side):
        self.side = side

def area(shape):
    return shape.side * shape.side

def slow(x, marker):
    if not os.path.exists(marker):
        # Two workers may get here at once: each its own temporary name, then an atomic
        # rename (the last one wins; either worker is a fine victim).
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as out:
            out.write(str(os.getpid()))
        os.replace(tmp, marker)
    import time
    time.sleep(0.2)
    return x + 1
"""

_CLIENT = """
import json, os, signal, sys, threading, time
started = time.perf_counter()
import operator
from just_distribute import Pool, compute_this, config, distribute
import tasks

address, tls, marker = sys.argv[1], (sys.argv[2] or None), sys.argv[3]
out = {}

def where(x):
    import socket
    time.sleep(0.02)  # long enough that both workers get chunks
    return socket.gethostname(), x * 2

f = distribute(job="cluster", address=address, tls=tls, chunksize=4)(where)
first = f([1])
out["time_to_first_result"] = time.perf_counter() - started
results, report = f.report(range(40))
assert [r[1] for r in results] == [2 * x for x in range(40)], results
out["workers"] = sorted(report.per_worker)

def timed(fn, data):
    t = time.perf_counter()
    value = fn(data)
    return time.perf_counter() - t, value

# Installed code (by reference) against the caller's tasks.py (by value, the workers lack it).
neg = distribute(job="cluster", address=address, tls=tls)(operator.neg)
out["installed_first"], v = timed(neg, range(8)); assert v == [-x for x in range(8)]
out["installed_later"], v = timed(neg, range(8))
area = distribute(job="cluster", address=address, tls=tls)(tasks.area)
shapes = [tasks.Shape(s) for s in range(8)]
out["by_value_first"], v = timed(area, shapes); assert v == [s * s for s in range(8)], v
out["by_value_later"], v = timed(area, shapes)
out["by_value_later2"], v = timed(area, shapes)

with config(tls=tls), Pool(2, job="cluster", address=address) as pool:  # (Pool: no tls=)
    assert pool.map(tasks.area, shapes) == [s * s for s in range(8)]
    assert pool.apply(where, (21,))[1] == 42
out["lazy"] = compute_this(address=address, tls=tls)(tasks.area)(tasks.Shape(7)).run(timeout=60)

# Worker loss: kill the worker running the first slow call; the run still completes.
killed = []
def killer():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(marker):
        time.sleep(0.05)
    pid = int(open(marker).read())
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)
threading.Thread(target=killer, daemon=True).start()
g = distribute(job="cluster", address=address, tls=tls, chunksize=2)(tasks.slow)
out["after_loss"] = g(range(10), [marker] * 10)
out["killed"] = killed
print(json.dumps(out))
"""


def _client(hosts: Hosts, tmp_path: Path, address: str, tls: str = "") -> dict[str, object]:
    client_dir = tmp_path / "client"
    client_dir.mkdir(exist_ok=True)
    (client_dir / "tasks.py").write_text(textwrap.dedent(_TASKS))
    (client_dir / "run.py").write_text(textwrap.dedent(_CLIENT))
    marker = str(tmp_path / "slow-marker")
    out = hosts.run("client", [sys.executable, "run.py", address, tls, marker], client_dir,
                    timeout=240)
    measured: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    print("\nacross namespaces:", json.dumps(measured, indent=1))
    assert measured["workers"] == ["host1-0", "host2-0"]
    assert measured["lazy"] == 49
    assert measured["after_loss"] == [x + 1 for x in range(10)]
    killed = measured["killed"]
    assert isinstance(killed, list) and killed and not psutil.pid_exists(killed[0])
    return measured


@pytest.mark.timeout(300)
def test_scheduler_and_workers_on_other_hosts(hosts: Hosts, tmp_path: Path) -> None:
    sched_dir = tmp_path / "sched"
    sched_dir.mkdir()
    address = f"tcp://{hosts.addr('sched')}:8786"
    hosts.start("sched", [DASK, "scheduler", "--host", hosts.addr("sched"), "--port", "8786",
                          "--no-dashboard"], sched_dir)
    work = tmp_path / "work"
    work.mkdir()
    _workers(hosts, address, work)
    _client(hosts, tmp_path, address)


@pytest.mark.timeout(300)
def test_tls_identities_across_hosts(hosts: Hosts, tmp_path: Path) -> None:
    ca = identities.make_ca(tmp_path / "ca")
    for name, role in (("sched", "scheduler"), ("host1", "worker"), ("host2", "worker"),
                       ("client", "client")):
        identities.issue(ca, tmp_path / f"id-{name}", role, name, [hosts.addr(name)])
    ident = tmp_path / "id-sched"
    service = hosts.start("sched", [
        sys.executable, "-m", "just_distribute", "cluster", "--workers", "1", "--host",
        hosts.addr("sched"), "--port", "8786", "--dashboard-port", "0",
        "--tls-ca", str(ident / "ca.pem"), "--tls-cert", str(ident / "cert.pem"),
        "--tls-key", str(ident / "key.pem")], tmp_path, stdout=subprocess.PIPE)
    said: list[str] = []
    address = _wait_for_line(service, "scheduler: ", 120, said).split(": ", 1)[1].strip()
    assert address == f"tls://{hosts.addr('sched')}:8786"
    dashboard = _wait_for_line(service, "dashboard: ", 30).split(": ", 1)[1].strip()
    assert dashboard.startswith(f"http://{hosts.addr('sched')}:")  # the real URL
    assert any("no authentication" in line for line in said), said
    # Scheduler, dashboard and its own worker: all on that one interface.
    assert _listening(service.pid) == {hosts.addr("sched")}
    for name in ("host1", "host2"):
        proc = hosts.start(name, [sys.executable, "-m", "just_distribute", "worker", address,
                                  "--workers", "1", "--name", name,
                                  "--tls", str(tmp_path / f"id-{name}")], tmp_path,
                           stdout=subprocess.PIPE)
        assert f"listening on {hosts.addr(name)}" in _wait_for_line(proc, "joined", 90)
        assert _listening(proc.pid) == {hosts.addr(name)}
    # A client without a certificate of this CA is refused within its connect timeout.
    stranger = hosts.run("client", [sys.executable, "-c", textwrap.dedent(f"""
        from just_distribute import ClusterUnreachableError, distribute
        try:
            distribute(job="cluster", address={address!r}, connect_timeout=3)(abs)([1])
        except ClusterUnreachableError as exc:
            print("refused:", exc)
    """)], tmp_path, timeout=60)
    assert "refused:" in stranger and hosts.addr("sched") in stranger
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "tasks.py").write_text(textwrap.dedent(_TASKS))
    (client_dir / "run.py").write_text(textwrap.dedent(_CLIENT))
    out = hosts.run("client", [sys.executable, "run.py", address, str(tmp_path / "id-client"),
                               str(tmp_path / "marker")], client_dir, timeout=240)
    measured = json.loads(out.strip().splitlines()[-1])
    print("\nacross namespaces, TLS:", json.dumps(measured, indent=1))
    assert set(measured["workers"]) >= {"host1-0", "host2-0"}
    assert measured["after_loss"] == [x + 1 for x in range(10)]
