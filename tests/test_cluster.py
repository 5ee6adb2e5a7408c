"""job="cluster" against a real function service (scheduler + worker processes) and the
embedded cluster: semantics, sending, failures."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import psutil
import pytest
from fixtures_cluster import EMBEDDED_WORKERS, SERVICE_WORKERS, BareCluster

from just_distribute import (
    CallTimeoutError,
    ClusterUnreachableError,
    WorkerLostError,
    distribute,
)
from just_distribute.executors import shutdown_all
from just_distribute.executors.cluster import SCATTER_BYTES


def square(x: int, *, offset: int = 0) -> int:
    return x * x + offset


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is bad: {x}")
    return x


def record(path: str, x: int) -> int:
    with open(path, "a") as out:
        out.write(f"{x}\n")
    return x


def test_cluster_job_on_the_service(cluster_address: str) -> None:
    f = distribute(job="cluster", address=cluster_address)(square)
    assert f(range(40), offset=1) == [x * x + 1 for x in range(40)]
    assert f([]) == []
    results, report = f.report(range(10))
    assert results == [x * x for x in range(10)]
    assert report.workers == 2 and report.calls == 10
    assert set(report.per_worker) <= {"worker-0", "worker-1"}


def test_cluster_errors_name_the_call_and_carry_the_remote_traceback(
    cluster_address: str,
) -> None:
    f = distribute(job="cluster", address=cluster_address)(fail_on_three)
    with pytest.raises(ValueError, match="three is bad") as info:
        f(range(6))
    assert any("call 3" in note for note in info.value.__notes__)
    assert "fail_on_three" in str(info.value.__cause__)
    g = f.with_options(on_error="return")
    out = g(range(5))
    assert out[:3] == [0, 1, 2] and isinstance(out[3], ValueError) and out[4] == 4


def test_identical_calls_both_run(cluster_address: str, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.txt")
    f = distribute(job="cluster", address=cluster_address, chunksize=1)(record)
    assert f([log, log], [5, 5]) == [5, 5]
    assert f([log, log], [5, 5]) == [5, 5]  # the same chunks again: no cached result
    assert Path(log).read_text().split() == ["5"] * 4


def test_lambdas_and_closures(cluster_address: str) -> None:
    base = 10

    def closure(x: int) -> int:
        return x + base

    assert distribute(job="cluster", address=cluster_address)(closure)(range(5)) == [
        10, 11, 12, 13, 14,
    ]
    lam = distribute(job="cluster", address=cluster_address)(lambda x: -x)
    assert lam(range(3)) == [0, -1, -2]


def test_function_defined_in_main(cluster_address: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from just_distribute import distribute

        @distribute(job="cluster")
        def cube(x):
            return x ** 3

        print(cube(range(5)))
    """))
    env = {**os.environ, "JUST_DISTRIBUTE_ADDRESS": cluster_address}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 8, 27, 64]"


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the bytes the client sends upstream."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("tcp://").rpartition(":")
        self.target = (host, int(port))
        self.sent = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def proxy(cluster_address: str) -> Iterator[CountingProxy]:
    p = CountingProxy(cluster_address)
    try:
        yield p
    finally:
        p.close()


def test_large_constant_travels_once_and_a_client_works_as_job(proxy: CountingProxy) -> None:
    big = os.urandom(2 * 1024 * 1024)  # incompressible: the bytes on the wire are honest
    assert len(big) > SCATTER_BYTES

    def size_plus(x: int, *, blob: bytes) -> int:
        return x + len(blob)

    client = distributed.Client(proxy.address, set_as_default=False, timeout=30)
    try:
        f = distribute(job=client, chunksize=1)(size_plus)
        before = proxy.sent
        assert f(range(12), blob=big) == [x + len(big) for x in range(12)]
        sent = proxy.sent - before
    finally:
        client.close()
    # 12 chunks; sent with each, the constant would cost 24 MB.
    assert len(big) <= sent < 2 * len(big), f"sent {sent} bytes for a {len(big)}-byte constant"


def test_a_large_function_travels_once_not_with_each_chunk(proxy: CountingProxy) -> None:
    blob = os.urandom(60_000)  # a 60 KB function: its closure holds incompressible bytes

    def size_plus(x: int) -> int:
        return x + len(blob)

    assert SCATTER_BYTES <= 60_000
    client = distributed.Client(proxy.address, set_as_default=False, timeout=30)
    try:
        f = distribute(job=client, chunksize=2)(size_plus)
        before = proxy.sent
        assert f(range(16)) == [x + len(blob) for x in range(16)]  # 8 chunks
        sent = proxy.sent - before
    finally:
        client.close()
    # With each of the 8 chunks the function would cost 480 KB; scattered, it goes once.
    assert len(blob) <= sent < 2 * len(blob), f"sent {sent} bytes for a 60 KB function"


def test_unreachable_address_fails_fast_and_names_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: nothing answers
        address = f"tcp://127.0.0.1:{port}"
        f = distribute(job="cluster", address=address, connect_timeout=2)(square)
        with pytest.raises(TypeError):
            f(5)  # bad input fails before any connection is tried
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}") as info:
            f(range(3))
    assert isinstance(info.value, ClusterUnreachableError)


def test_missing_cluster_extra_says_how_to_install(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["distributed"] = None  # as if dask.distributed were not installed
        from just_distribute import distribute, MissingExtraError
        try:
            distribute(job="cluster")(abs)([1, -2])
        except MissingExtraError as exc:
            print(exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
    )
    assert 'pip install "just-distribute[cluster]"' in out.stdout, out.stderr


def inner_double(x: int) -> int:
    return 2 * x


def outer_sum(n: int, address: str) -> int:
    inner = distribute(job="cluster", address=address)(inner_double)
    return sum(inner(range(n)))


def outer_embedded(n: int) -> tuple[int, int]:
    inner = distribute(job="cluster")(inner_double)  # no address: would embed a cluster
    total = sum(inner(range(n)))
    return total, len(psutil.Process().children(recursive=True))


def test_nested_cluster_calls_do_not_deadlock(cluster_address: str) -> None:
    f = distribute(job="cluster", address=cluster_address)(outer_sum)
    # More outer calls than worker threads: waiting on the cluster would deadlock.
    assert f([3, 4, 5, 6], [cluster_address] * 4) == [6, 12, 20, 30]
    g = distribute(job="cluster", address=cluster_address)(outer_embedded)
    # Run serially inside the worker: no cluster was started there.
    assert g([3, 4]) == [(6, 0), (12, 0)]


def test_embedded_cluster_is_started_once_and_reused() -> None:
    f = distribute(job="cluster", workers=EMBEDDED_WORKERS)(square)
    assert f(range(5)) == [0, 1, 4, 9, 16]
    g = distribute(job="dask", workers=EMBEDDED_WORKERS)(lambda x: x + 1)
    assert g(range(3)) == [1, 2, 3]
    from just_distribute import Pool
    from just_distribute.config import resolve_options
    from just_distribute.executors import get_executor
    from just_distribute.executors.cluster import ClusterExecutor

    ex = get_executor(resolve_options({"job": "cluster", "workers": EMBEDDED_WORKERS}))
    assert isinstance(ex, ClusterExecutor)
    address = ex.client().scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    ex.refresh()
    assert ex.workers == EMBEDDED_WORKERS
    # A Pool on the embedded cluster has a client of its own, to the same cluster.
    with Pool(EMBEDDED_WORKERS, job="cluster") as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        pool_ex = pool._executor.inner  # type: ignore[attr-defined]
        assert pool_ex is not ex and pool_ex.client().scheduler.address == address
    assert ex.client().scheduler.address == address and f(range(2)) == [0, 1]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(90)
def test_timeouts_count_from_the_start_not_the_queue(cluster_address: str) -> None:
    f = distribute(job="cluster", address=cluster_address, timeout=1.5)(nap)
    # 8 naps of 0.4 s on 2 workers: the last ones wait ~1.2 s in the queue, within budget
    # only if the clock starts when they start.
    assert f([0.4] * 8) == [0.4] * 8
    with pytest.raises(CallTimeoutError, match="call 1 of nap"):
        f([0.1, 2.5])


def slow_marked(x: int, marker: str) -> int:
    if not os.path.exists(marker):
        with open(marker + ".tmp", "w") as out:
            out.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
    time.sleep(0.3)
    return x * 3


@pytest.mark.timeout(120)
def test_worker_killed_mid_run_completes_or_fails_clearly(
    cluster_service: object, cluster_address: str, tmp_path: Path
) -> None:
    marker = str(tmp_path / "pid")
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.exists(marker):
            time.sleep(0.05)
        if os.path.exists(marker):
            pid = int(Path(marker).read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    f = distribute(job="cluster", address=cluster_address, chunksize=2)(slow_marked)
    try:
        out = f(range(12), [marker] * 12)
    except WorkerLostError as exc:  # dask gave up after its allowed failures
        assert "died" in str(exc)
    else:
        assert out == [x * 3 for x in range(12)]
    thread.join(5)
    assert killed, "the worker was never killed: the test did not test anything"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    # The nanny replaces the worker: the service serves on, at full strength again.
    assert distribute(job="cluster", address=cluster_address)(square)(range(3)) == [0, 1, 4]
    with distributed.Client(cluster_address, set_as_default=False, timeout=30) as client:
        client.wait_for_workers(SERVICE_WORKERS, timeout=60)
        assert len(client.scheduler_info()["workers"]) == SERVICE_WORKERS


# -- no unbounded wait ----------------------------------------------------------------------
class _Silent(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_port_that_is_no_scheduler_fails_within_connect_timeout() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        f = distribute(job="cluster", address=address, connect_timeout=2)(square)
        started = time.monotonic()
        with pytest.raises(ClusterUnreachableError, match=address):
            f(range(3))
        assert time.monotonic() - started < 10
    finally:
        server.shutdown()
        server.server_close()


_BAD_ADDRESS = """
import sys, time
from just_distribute import distribute
started = time.monotonic()
try:
    distribute(job="cluster", address=sys.argv[1])(abs)([1, -2])
except ValueError as exc:
    print("ValueError:", exc)
print(f"took {time.monotonic() - started:.1f}")
"""


@pytest.mark.parametrize("address", ["nonsense", "http://127.0.0.1:8787/status",
                                     "tcp://127.0.0.1:70000", "tcp://:8786"])
def test_a_malformed_address_fails_at_once_without_exit_delay(
    address: str, tmp_path: Path
) -> None:
    script = tmp_path / "bad.py"
    script.write_text(_BAD_ADDRESS)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), address], capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "ValueError: address=" in done.stdout, done.stdout
    assert "tcp://HOST:PORT" in done.stdout or "between 1 and 65535" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert elapsed < 15, f"{elapsed:.1f}s: the interpreter waited at exit"


def slow_square(x: int) -> int:
    time.sleep(0.5)
    return x * x


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[BareCluster]:
    cluster = BareCluster(str(tmp_path), workers=1)
    try:
        yield cluster
    finally:
        for proc in cluster.procs:  # a stopped scheduler must be able to hear SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
        shutdown_all()
        cluster.stop()


@pytest.mark.timeout(120)
def test_a_stopped_scheduler_ends_the_run_within_the_bound(own_cluster: BareCluster) -> None:
    f = distribute(job="cluster", address=own_cluster.address, connect_timeout=2,
                   chunksize=1)(slow_square)
    assert f(range(2)) == [0, 1]
    scheduler = own_cluster.procs[0]
    threading.Timer(1.0, os.kill, (scheduler.pid, signal.SIGSTOP)).start()
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError) as info:
        f(range(40))
    elapsed = time.monotonic() - started
    assert own_cluster.address in str(info.value) and "answer" in str(info.value)
    assert not any("call" in note for note in getattr(info.value, "__notes__", []))
    assert elapsed < 30, f"noticed after {elapsed:.1f}s"


@pytest.mark.timeout(120)
def test_a_killed_scheduler_is_named_not_a_call(own_cluster: BareCluster) -> None:
    f = distribute(job="cluster", address=own_cluster.address, connect_timeout=2,
                   chunksize=1)(slow_square)
    assert f(range(2)) == [0, 1]
    scheduler = own_cluster.procs[0]
    threading.Timer(1.0, os.kill, (scheduler.pid, signal.SIGKILL)).start()
    with pytest.raises(ClusterUnreachableError, match="went away") as info:
        f(range(40))
    assert own_cluster.address in str(info.value)
    assert not any("call 0" in note for note in getattr(info.value, "__notes__", []))


def pid_and_nap(x: int) -> tuple[int, int]:
    time.sleep(0.2)
    return os.getpid(), x


@pytest.mark.timeout(180)
def test_a_stopped_worker_does_not_hold_its_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from just_distribute.service import start_service

    # dask's own setting, read by the service's scheduler: drop a silent worker after 6 s.
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "6s")
    with start_service(2) as service:
        f = distribute(job="cluster", address=service.address, chunksize=1)(pid_and_nap)
        pids = {pid for pid, _ in f(range(8))}
        assert len(pids) == 2, "both workers should have taken part"
        stopped = min(pids)
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            out = f(range(20))
            elapsed = time.monotonic() - started
        finally:
            with contextlib.suppress(ProcessLookupError):  # (its nanny may have replaced it)
                os.kill(stopped, signal.SIGCONT)
        print(f"20 calls with one worker stopped: {elapsed:.1f}s")
        assert [x for _, x in out] == list(range(20))
        assert all(pid != stopped for pid, _ in out)
        assert elapsed < 60, f"took {elapsed:.1f}s"
        shutdown_all()


def _chunks_on_scheduler(dask_scheduler: object, prefix: str) -> int:
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith(prefix))  # type: ignore[attr-defined]


def _left_after(address: str, prefix: str) -> int:
    """Chunks still on the scheduler once it settles (a fresh client: the interrupted
    process's own may have been cut mid-message; its handshake is retried)."""
    for attempt in range(3):
        try:
            with distributed.Client(address, set_as_default=False, timeout=30) as c:
                deadline = time.monotonic() + 10
                left = c.run_on_scheduler(_chunks_on_scheduler, prefix=prefix)
                while left > 1 and time.monotonic() < deadline:
                    time.sleep(0.2)
                    left = c.run_on_scheduler(_chunks_on_scheduler, prefix=prefix)
                return int(left)
        except AssertionError:  # dask's handshake check, seen once under load
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.mark.timeout(120)
def test_ctrl_c_cancels_the_queued_dask_tasks(own_cluster: BareCluster) -> None:
    f = distribute(job="cluster", address=own_cluster.address, chunksize=1)(nap)
    assert f([0.0]) == [0.0]
    seen: list[int] = []

    def interrupt() -> None:
        with distributed.Client(own_cluster.address, set_as_default=False, timeout=30) as c:
            seen.append(c.run_on_scheduler(_chunks_on_scheduler, prefix="nap-chunk"))
        os.kill(os.getpid(), signal.SIGINT)

    threading.Timer(1.5, interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        f([0.5] * 40)  # 20 s of work on one worker
    assert seen and seen[0] > 1, seen  # the premise: chunks were queued
    left = _left_after(own_cluster.address, "nap-chunk")
    assert left <= 1, f"{left} chunks still on the scheduler after Ctrl-C"
    started = time.monotonic()
    assert f([0.0, 0.0]) == [0.0, 0.0]  # not queued behind the interrupted run
    assert time.monotonic() - started < 10
