"""The start of a ``job="compute"`` worker: what it loads, where it looks, who takes the work.

A cold call waits for the workers to start, so a worker loads only what running a chunk
needs (not the package's configuration, registry, executors or error classes), the working
directory cannot shadow the standard library it loads, and no chunk waits for a worker that
is still starting while another one is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from just_distribute.executors.base import Payload, RunScope, Task
from just_distribute.executors.processes import ProcessExecutor

ROOT = Path(__file__).resolve().parents[1]

#: What a worker may load of the package before and while running its chunks.
WORKER_MODULES = {
    "just_distribute",  # registered, its __init__ not run
    "just_distribute.executors",  # the same
    "just_distribute.executors.process_main",
    "just_distribute.executors.wire",
    "just_distribute.executors.chunk",
    "just_distribute.channel",
}


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_script(script: Path, cwd: Path) -> dict[str, object]:
    """Run ``python script.py`` as a user would; its last line of output is JSON."""
    done = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=script_env(), capture_output=True,
        text=True, timeout=90, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_a_worker_loads_only_what_runs_a_chunk(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(textwrap.dedent("""
        import sys

        def modules(_: int) -> list[str]:
            return sorted(sys.modules)

        def modules_with(array: object) -> list[str]:
            return sorted(sys.modules)

        def package_names(_: int) -> list[str]:
            # A user's function may use the package: its __init__ runs on that first use.
            from just_distribute import __version__, update
            from just_distribute.executors import executor_for
            return [__version__, update.__name__, executor_for.__name__]
    """))
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json
        from just_distribute import distribute
        import numpy as np
        from probe import modules, modules_with, package_names

        f = distribute(modules, job="compute", workers=1)
        f([0])  # a first chunk: whatever its outcome loads is loaded for the second
        loaded = f([0])[0]
        # 8 MB: it travels through shared memory, which the worker loads for it.
        big = distribute(modules_with, job="compute", workers=1)([np.zeros(1 << 20)])[0]
        names = distribute(package_names, job="compute", workers=1)([0])[0]
        print(json.dumps({"loaded": loaded, "big": big, "names": names}))
    """))
    out = run_script(script, tmp_path)
    loaded = set(out["loaded"])  # type: ignore[call-overload]
    ours = {m for m in loaded if m.split(".")[0] == "just_distribute"}
    assert ours <= WORKER_MODULES, sorted(ours - WORKER_MODULES)
    # The heavy parts a worker used to load at start-up: error classes (and the
    # multiprocessing.pool they extend), configuration, the executors' base.
    # And the standard library the caller's side of updates and a failure's traceback use.
    for module in ("multiprocessing.pool", "concurrent.futures", "just_distribute.errors",
                   "just_distribute.config", "just_distribute.executors.base",
                   "just_distribute.updates", "logging", "dataclasses", "inspect",
                   "traceback"):
        assert module not in loaded, module
    # Before: the shared-memory module's import ran the executors' __init__ in the worker.
    big = set(out["big"])  # type: ignore[call-overload]
    assert "just_distribute.executors.shm" in big
    assert {m for m in big if m.startswith("just_distribute")} <= WORKER_MODULES | {
        "just_distribute.executors.shm", "just_distribute._pids"}, sorted(big)
    import just_distribute

    names = out["names"]
    assert names == [just_distribute.__version__, "update", "executor_for"]


def test_the_working_directory_does_not_shadow_the_standard_library(tmp_path: Path) -> None:
    app, cwd = tmp_path / "app", tmp_path / "work"
    app.mkdir()
    cwd.mkdir()
    # A user's file named like a module that a worker loads while it starts.
    for name in ("socket", "signal", "struct"):
        (cwd / f"{name}.py").write_text(
            f"raise ImportError('the working directory\\'s {name}.py was imported')\n"
        )
    script = app / "script.py"
    script.write_text(textwrap.dedent("""
        import json, os

        from just_distribute import distribute

        def where(x: int) -> tuple[int, str]:
            import socket
            return x * x, socket.__file__

        out = distribute(where, job="compute", workers=2)(range(4))
        print(json.dumps({"values": [v for v, _ in out], "socket": out[0][1],
                          "cwd": os.getcwd()}))
    """))
    out = run_script(script, cwd)
    assert out["values"] == [0, 1, 4, 9]
    assert out["cwd"] == str(cwd)
    assert not str(out["socket"]).startswith(str(cwd)), out["socket"]


# -- whichever worker is up takes the work -------------------------------------------------


def start_fast_or_wait(folder: str) -> None:
    """The first worker to start goes on; the other waits for the test's word."""
    try:
        os.close(os.open(os.path.join(folder, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(folder, "release")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)


def pid_of(_: int) -> int:
    return os.getpid()


def test_no_chunk_waits_for_a_worker_that_is_still_starting(tmp_path: Path) -> None:
    # The executor itself: its initializer runs while a worker starts (the decorator's runs
    # in the first call instead, which is not the start-up tested here).
    pool = ProcessExecutor(2, initializer=start_fast_or_wait, initargs=(str(tmp_path),))
    try:
        payload, run = Payload(pid_of, "pid_of"), RunScope()
        futures = [pool.submit(Task(payload, [[i]], False, run)) for i in range(8)]
        try:
            # Every chunk, those taken by the worker still in its initializer too, runs on
            # the one that is up: they all end while the other one still starts.
            pids = [f.result(timeout=60).values[0] for f in futures]
        except FutureTimeout:
            pids = None
        finally:
            (tmp_path / "release").touch()
        assert pids is not None, "a chunk waited for the worker that was starting"
        assert len(set(pids)) == 1
        # Released, the other worker comes up and takes chunks as usual.
        deadline = time.monotonic() + 60
        while len(pool.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(pool.pids()) == 2
        more = [pool.submit(Task(payload, [[i]], False, run)) for i in range(8)]
        assert all(f.result(timeout=60).values[0] in pool.pids() for f in more)
    finally:
        pool.shutdown()
