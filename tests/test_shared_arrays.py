"""Large numpy arrays and pandas blocks travel to ``job="compute"`` workers and back through
shared memory, never through the sockets, and no segment outlives its use: not after an
exception, a worker killed, a Ctrl-C, or the caller killed.

Real worker processes throughout; what is left is counted in the segment folder
(``/dev/shm``) by the caller's pid, which every segment's name holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import just_distribute
from just_distribute import distribute
from just_distribute.config import resolve_options
from just_distribute.engine import _CHUNK_BYTES
from just_distribute.errors import WorkerLostError
from just_distribute.executors import shm, wire

SCRIPTS = Path(__file__).parent / "fault_scripts"
ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
#: Far below any array these tests send: the frames carry names and small pickles only.
SMALL = 64 << 10


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def wait_clean(owner: int, seconds: float = 10.0) -> list[str]:
    """The owner's segments still there once they stop going away (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while (left := shm.leftovers(owner)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class SocketBytes:
    """Bytes through the caller's sockets during a block: ``with SocketBytes() as b: ...``."""

    def __enter__(self) -> SocketBytes:
        self.before = wire.frames.snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        after = wire.frames.snapshot()
        self.sent = after["bytes_sent"] - self.before["bytes_sent"]
        self.received = after["bytes_received"] - self.before["bytes_received"]
        self.frames = after["frames_sent"] - self.before["frames_sent"]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    assert wait_clean(os.getpid()) == [], "a segment of this test was left behind"


# -- functions run by the workers (module level: the workers import this module) ----------


def sort_batch(batch: np.ndarray) -> np.ndarray:
    return np.sort(batch)


def batch_sum(batch: np.ndarray, *, table: np.ndarray) -> float:
    return float(batch.sum()) + float(table[-1])


def shares_segment(_: int, *, table: np.ndarray) -> bool:
    # A constant that came through a segment is a view of a map, not a copy of the pickle.
    return not table.flags.owndata


def enrich(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(total=frame["price"] * frame["quantity"], label=frame["sku"].str.upper())


def square_array(a: np.ndarray) -> np.ndarray:
    return a * a


def fail_on_second(batch: np.ndarray) -> float:
    if batch[0] > 0:
        raise ValueError(f"batch starting at {batch[0]} is bad")
    return float(batch.sum())


def die_on_second(batch: np.ndarray) -> float:
    if batch[0] > 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return float(batch.sum())


def die_after_writing(batch: np.ndarray) -> float:
    """Writes a result segment that no one will read (as if killed while sending it)."""
    if batch[0] > 0:
        shm.dumps(np.ones(MB), hand_over=True, owner=os.getppid())  # named for the caller
        os.kill(os.getpid(), signal.SIGKILL)
    return float(batch.sum())


def data_pointer(batch: np.ndarray) -> int:
    return int(batch.__array_interface__["data"][0])


# -- what travels how -----------------------------------------------------------------------


def test_big_arrays_do_not_cross_the_socket_and_results_match_serial() -> None:
    data = np.random.default_rng(0).random(4 * MB // 8 * 4)  # 16 MB
    run = distribute(sort_batch, job="compute", workers=2, batches=4)
    run(data[:1000])  # start the pool, load the function
    with SocketBytes() as sock:
        results = run(data)
    expected = [np.sort(b) for b in np.array_split(data, 4)]
    assert len(results) == 4
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)
        assert not got.flags.owndata  # a view of the result's segment, no copy
    assert sock.frames >= 2  # (chunks of two 4 MB batches: the byte cap is 8 MB)
    assert sock.sent < SMALL and sock.received < SMALL, vars(sock)


def test_flatten_joins_views_into_one_array() -> None:
    data = np.random.default_rng(1).random(3 * MB)  # 24 MB
    out = distribute(sort_batch, job="compute", workers=2, flatten=True)(data)
    expected = np.concatenate([np.sort(b) for b in np.array_split(data, 2)])
    np.testing.assert_array_equal(out, expected)


def test_small_arrays_stay_in_the_pickle() -> None:
    data = np.arange(10_000, dtype=np.float64)  # 80 KB: cheaper inline than a segment
    run = distribute(square_array, job="compute", workers=2)
    run(data[:10])
    with SocketBytes() as sock:
        out = run(data)
    np.testing.assert_array_equal(np.concatenate(out), data * data)
    assert sock.sent > data.nbytes and sock.received > data.nbytes


def test_a_large_keyword_constant_is_shared_once_not_copied_per_worker() -> None:
    table = np.full(2 * MB, 2.0)  # 16 MB, for every call
    data = np.arange(2 * MB, dtype=np.float64)  # 8 batches of 2 MB
    run = distribute(batch_sum, job="compute", workers=2, batches=8)
    with SocketBytes() as sock:
        sums = run(data, table=table)
    assert sums == [float(b.sum()) + 2.0 for b in np.array_split(data, 8)]
    assert sock.sent < SMALL, vars(sock)
    views = distribute(shares_segment, job="compute", workers=2)(range(8), table=table)
    assert views == [True] * 8


def test_pandas_frames_blocks_travel_through_shared_memory() -> None:
    n = 400_000
    orders = pd.DataFrame({
        "sku": ["a", "b"] * (n // 2),  # (few distinct strings: a small pickle)
        "price": np.full(n, 1.5),
        "quantity": np.arange(n, dtype=np.float64),
    })
    run = distribute(enrich, job="compute", workers=2, flatten=True)
    with SocketBytes() as sock:
        out = run(orders)
    pd.testing.assert_frame_equal(out, enrich(orders))
    # The strings travel in the pickle (memo references: ~2 bytes a row); the 2 x 3.2 MB of
    # numbers, and the 3 x 3.2 MB back, do not.
    sent_numbers, back_numbers = 2 * n * 8, 3 * n * 8
    assert sock.sent < sent_numbers // 3 and sock.received < back_numbers // 3, vars(sock)


def test_pool_map_over_a_list_of_big_arrays() -> None:
    arrays = [np.random.default_rng(i).random(MB // 4) for i in range(6)]  # 6 x 2 MB
    with just_distribute.Pool(2, job="compute") as pool:
        pool.map(square_array, arrays[:1])
        with SocketBytes() as sock:
            out = pool.map(square_array, arrays)
        for got, a in zip(out, arrays, strict=True):
            np.testing.assert_array_equal(got, a * a)
        assert sock.sent < SMALL and sock.received < SMALL, vars(sock)
        assert next(pool.imap(square_array, arrays[:2])).shape == arrays[0].shape


def test_io_and_serial_jobs_share_the_callers_memory_as_before() -> None:
    data = np.arange(4 * MB // 8, dtype=np.float64)
    base = data_pointer(data)
    for job in ("io", "serial"):
        pointers = distribute(data_pointer, job=job, workers=2, batches=2)(data)
        assert pointers == [base, base + data.nbytes // 2], job  # views, no copy


# -- chunk sizing counts bytes ----------------------------------------------------------------


def test_a_chunk_of_large_elements_is_smaller_than_a_chunk_of_small_ones() -> None:
    run = distribute(square_array, job="compute", workers=2)
    small = [np.arange(10.0) for _ in range(64)]
    big = [np.ones(_CHUNK_BYTES // 8 // 2) for _ in range(64)]  # half the cap each
    _, small_report = run.report(small)
    out, big_report = run.report(big)
    small_chunks = sum(s.chunks for s in small_report.per_worker.values())
    big_chunks = sum(s.chunks for s in big_report.per_worker.values())
    assert small_chunks <= 8  # 64 calls, 2 workers x 4 chunks each
    assert big_chunks == 32  # two elements of half the byte cap per chunk
    assert all(o.shape == big[0].shape for o in out)


def test_call_bytes_reads_arrays_frames_and_bytes() -> None:
    from just_distribute.planning import size_of

    assert size_of(np.zeros(1000)) == 8000
    assert size_of(b"x" * 500) == 500
    frame = pd.DataFrame({"a": np.zeros(100), "b": np.zeros(100, dtype=np.int32)})
    assert size_of(frame) >= 1200
    assert resolve_options({"job": "compute"}).chunksize is None  # the cap is the default


# -- nothing leaked, whatever happens ------------------------------------------------------


def test_no_segment_left_after_a_call_raises() -> None:
    data = np.arange(2 * MB // 8 * 4, dtype=np.float64)  # 8 MB, 2 batches
    with pytest.raises(ValueError, match="is bad"):
        distribute(fail_on_second, job="compute", workers=2)(data)
    assert wait_clean(os.getpid()) == []


def test_no_segment_left_after_a_worker_is_killed() -> None:
    data = np.arange(2 * MB // 8 * 4, dtype=np.float64)
    with pytest.raises(WorkerLostError):
        distribute(die_on_second, job="compute", workers=2)(data)
    assert wait_clean(os.getpid()) == []


def test_a_lost_workers_unread_results_are_unlinked() -> None:
    data = np.arange(2 * MB // 8 * 4, dtype=np.float64)
    with pytest.raises(WorkerLostError):
        distribute(die_after_writing, job="compute", workers=2)(data)
    assert wait_clean(os.getpid(), 5) == []


def _events(proc: subprocess.Popen[str]) -> Iterator[dict[str, object]]:
    assert proc.stdout is not None
    for line in proc.stdout:
        yield json.loads(line)


@pytest.mark.timeout(120)
def test_no_segment_left_after_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "big_arrays.py"), str(tmp_path), "sigint"],
        stdout=subprocess.PIPE, text=True, env=script_env(),
    )
    try:
        events = {str(e["event"]): e for e in _events(proc)}
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    pid = int(str(events["ready"]["pid"]))
    assert events["interrupted"]["left"] == []  # already before the caller exits
    assert wait_clean(pid) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["wait", "idle"])
def test_no_segment_left_after_the_caller_is_killed(tmp_path: Path, mode: str) -> None:
    """Killed while its workers are busy (they notice their parent is gone) or while they
    are idle (they notice the closed socket)."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "big_arrays.py"), str(tmp_path), mode],
        stdout=subprocess.PIPE, text=True, env=script_env(),
    )
    try:
        events = _events(proc)
        pid = int(str(next(events)["pid"]))
        deadline = time.monotonic() + 60
        if mode == "idle":
            assert next(events)["event"] == "consuming"
        while mode == "wait" and len(list(tmp_path.glob("started-*"))) < 2:
            assert time.monotonic() < deadline, "the calls never started"
            time.sleep(0.05)
        # Two chunks run, two more wait in the caller, the constant's segment is mapped:
        # all of them the caller's, and the caller dies without a word.
        assert shm.leftovers(pid), "the run was expected to hold segments"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert wait_clean(pid, 10) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flatten", [False, True])
def test_callers_extra_peak_memory_stays_near_the_results_size(
    tmp_path: Path, flatten: bool
) -> None:
    script = tmp_path / "peak.py"
    script.write_text(textwrap.dedent('''
        import json, sys
        import numpy as np
        from just_distribute import distribute

        def kib(field):
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

        def sort_batch(batch: np.ndarray) -> np.ndarray:
            return np.sort(batch)

        if __name__ == "__main__":
            flatten = sys.argv[1] == "1"
            run = distribute(sort_batch, job="compute", workers=2, batches=8, flatten=flatten)
            run(np.random.default_rng(0).random(1000))  # pool started, imports done
            data = np.random.default_rng(1).random(25_000_000)  # 200 MB, touched
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # the peak (VmHWM) starts again from the RSS now
            before = kib("VmRSS")
            out = run(data)
            parts = [out] if flatten else out
            assert sum(float(o.sum()) for o in parts) > 0  # every page of the results read
            print(json.dumps({"before": before, "peak": kib("VmHWM"), "size": data.nbytes}))
    '''))
    out = subprocess.run(
        [sys.executable, str(script), "1" if flatten else "0"], capture_output=True,
        text=True, env=script_env(), timeout=100, check=True,
    )
    figures = json.loads(out.stdout)
    extra = (figures["peak"] - figures["before"]) * 1024 / figures["size"]
    # The results are 1.0x the input and live in the caller; the input is not copied
    # into the caller's memory on its way to the workers (pwrite to the segment); flatten
    # copies part by part, each unmapped once copied. (The peak is the process's own
    # VmHWM: ru_maxrss would start at the parent's, pytest's.)
    assert 0.9 <= extra <= 1.2, figures


def test_a_script_with_its_function_in_main(tmp_path: Path) -> None:
    """The user's setting: the function (sent by value, through dill) and a large constant
    live in ``__main__``; arrays still go through shared memory, both ways."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent('''
        import json, os
        import numpy as np
        from just_distribute import distribute
        from just_distribute.executors import shm, wire

        @distribute(job="compute", workers=2, flatten=True)
        def shift(batch: np.ndarray, *, offsets: np.ndarray) -> np.ndarray:
            return batch + offsets[: len(batch)]

        if __name__ == "__main__":
            data = np.arange(4_000_000, dtype=np.float64)
            offsets = np.full(4_000_000, 0.5)
            before = wire.frames.snapshot()
            out = shift(data, offsets=offsets)
            after = wire.frames.snapshot()
            halves = np.array_split(data, 2)
            expected = np.concatenate([h + offsets[: len(h)] for h in halves])
            print(json.dumps({
                "equal": bool(np.array_equal(out, expected)),
                "sent": after["bytes_sent"] - before["bytes_sent"],
                "received": after["bytes_received"] - before["bytes_received"],
                "left": shm.leftovers(os.getpid()),
            }))
    '''))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=script_env(),
        timeout=100, check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["equal"]
    assert figures["sent"] < SMALL and figures["received"] < SMALL, figures
    assert figures["left"] == []


def test_the_recipe_states_the_thresholds_in_force() -> None:
    text = (ROOT / "docs" / "recipes" / "cpu.md").read_text(encoding="utf-8")
    assert shm.MIN_BUFFER == 64 << 10 and "**64 KiB or more**" in text
    assert shm.MIN_BYTES == 1 << 20 and "**1 MiB**" in text
    assert _CHUNK_BYTES == 8 << 20 and "at most about 8 MiB of arguments" in text


def test_without_room_for_segments_arrays_go_through_the_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shm, "DIR", "/nonexistent-folder-for-segments")
    monkeypatch.setattr(shm, "_warned", False)
    data = np.arange(2 * MB, dtype=np.float64)  # 16 MB, 2 batches
    run = distribute(batch_sum, job="compute", workers=2)
    with SocketBytes() as sock:
        sums = run(data, table=np.zeros(4))
    assert sums == [float(b.sum()) for b in np.array_split(data, 2)]
    assert sock.sent > data.nbytes  # the socket, as before shared memory
    assert "shared memory unavailable" in caplog.text
