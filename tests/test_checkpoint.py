"""``checkpoint=``: finished chunks recorded durably; a rerun runs only what is missing."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from just_distribute import distribute
from just_distribute.checkpoint import fingerprint

SCRIPTS = Path(__file__).parent / "fault_scripts"
ROOT = Path(__file__).resolve().parents[1]


def records(directory: Path) -> list[Path]:
    return list(directory.glob("*/*.rec"))


def logged(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(120)
def test_sigkill_at_60_percent_then_rerun_runs_only_the_unfinished_calls(
    tmp_path: Path,
) -> None:
    n, pause = 200, 0.02  # 100 chunks of 2 calls
    ckpt, first_log, second_log = tmp_path / "ckpt", tmp_path / "first", tmp_path / "second"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    script = [sys.executable, str(SCRIPTS / "checkpoint_run.py"), str(ckpt)]
    proc = subprocess.Popen(
        [*script, str(first_log), str(n), str(pause)], stdout=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while len(records(ckpt)) < 60:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in the checkpoint"
            time.sleep(0.01)
        workers = psutil.Process(proc.pid).children()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    # Orphaned workers notice their parent is gone and exit on their own.
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    done = records(ckpt)
    assert 60 <= len(done) < 100
    for record in done:  # atomic writes: every record is whole
        fmt, values = pickle.loads(record.read_bytes())
        assert fmt == 1 and len(values) == 2

    out = subprocess.run(
        [*script, str(second_log), str(n), str(pause)],
        capture_output=True, env=env, timeout=90,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout) == [x * x for x in range(n)]
    rerun = logged(second_log)
    assert len(rerun) == n - 2 * len(done)  # only the calls without a record ran
    assert len(set(rerun)) == len(rerun)
    assert set(rerun) | set(logged(first_log)) == set(range(n))
    assert len(records(ckpt)) == 100


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io", "web", "serial", "cluster"])
def test_rerun_reuses_records_on_every_job(
    tmp_path: Path, job: str, request: pytest.FixtureRequest
) -> None:
    log = tmp_path / "log"
    where: dict[str, Any] = {"workers": 2}
    if job == "cluster":  # the session's function service: the records stay here
        where = {"address": request.getfixturevalue("cluster_address")}
    f = distribute(logged_square, job=job, checkpoint=str(tmp_path / "ck"), **where)
    assert f(range(30), log=str(log)) == [x * x for x in range(30)]
    assert sorted(logged(log)) == list(range(30))
    assert f(range(30), log=str(log)) == [x * x for x in range(30)]
    assert len(logged(log)) == 30  # nothing ran again
    # Changed inputs run again (only the chunks whose inputs changed).
    changed = [*range(29), 100]
    assert f(changed, log=str(log)) == [x * x for x in changed]
    assert logged(log)[30:] == [100]


def logged_square(x: int, *, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * x


def make_function(body: str, name: str = "work") -> Any:
    """A function ``work`` with the given body, in a module namespace of its own."""
    namespace: dict[str, Any] = {"__name__": "checkpoint_subject"}
    exec(body, namespace)  # the same qualified name, different code
    return namespace[name]


@pytest.mark.timeout(60)
def test_changed_code_constants_or_helpers_never_reuse_stale_results(tmp_path: Path) -> None:
    ck = str(tmp_path / "ck")

    def run(fn: Any, **constants: Any) -> list[Any]:
        return distribute(fn, job="serial", checkpoint=ck)(range(10), **constants)

    v1 = make_function("def work(x, *, k=1):\n    return x + k\n")
    v2 = make_function("def work(x, *, k=1):\n    return x + 2 * k\n")
    assert run(v1) == [x + 1 for x in range(10)]
    assert run(v2) == [x + 2 for x in range(10)]  # new code: not the old records
    assert run(v1, k=5) == [x + 5 for x in range(10)]  # new keyword constant
    assert run(v1) == [x + 1 for x in range(10)]
    h1 = make_function("def helper(x):\n    return x\ndef work(x):\n    return helper(x)\n")
    h2 = make_function("def helper(x):\n    return -x\ndef work(x):\n    return helper(x)\n")
    assert run(h1) == list(range(10))
    assert run(h2) == [-x for x in range(10)]  # a changed helper counts too
    g1 = make_function("SCALE = 3\ndef work(x):\n    return x * SCALE\n")
    g2 = make_function("SCALE = 4\ndef work(x):\n    return x * SCALE\n")
    assert run(g1) == [3 * x for x in range(10)]
    assert run(g2) == [4 * x for x in range(10)]  # so does a changed module setting


def test_fingerprint_is_stable_and_sees_closures() -> None:
    def outer(n: int) -> Any:
        def inner(x: int) -> int:
            return x * n

        return inner

    assert fingerprint(outer(2)) == fingerprint(outer(2))
    assert fingerprint(outer(2)) != fingerprint(outer(3))
    assert fingerprint(lambda x: x in {"a", "b"}) == fingerprint(lambda x: x in {"b", "a"})


@pytest.mark.timeout(60)
def test_failed_calls_are_not_recorded_and_run_again(tmp_path: Path) -> None:
    log = tmp_path / "log"
    flaky = make_function(
        "def work(x, *, log, fail):\n"
        "    open(log, 'a').write(f'{x}\\n')\n"
        "    if x == fail:\n"
        "        raise ValueError(x)\n"
        "    return x\n"
    )
    f = distribute(flaky, job="io", workers=2, chunksize=2, on_error="return",
                   checkpoint=str(tmp_path / "ck"))
    out = f(range(6), log=str(log), fail=3)
    assert isinstance(out[3], ValueError)
    assert f(range(6), log=str(log), fail=3)[:3] == [0, 1, 2]
    assert sorted(logged(log)[6:]) == [2, 3]  # only the chunk holding the failure ran again


@pytest.mark.timeout(60)
def test_streaming_input_of_unknown_length_is_recorded(tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = distribute(logged_square, job="io", workers=2, checkpoint=str(tmp_path / "ck"))
    assert list(f.iter((x for x in range(40)), log=str(log))) == [x * x for x in range(40)]
    assert list(f.iter((x for x in range(40)), log=str(log))) == [x * x for x in range(40)]
    assert len(logged(log)) == 40
