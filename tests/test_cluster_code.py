"""Code that travels to a separately started dask cluster that cannot import the caller's
modules (these tests, a ``tasks.py`` beside a script), shipping a package, version checks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import distributed
import pytest
from fixtures_cluster import BareCluster, bare_env

from just_distribute import Pool, compute_this, distribute, ship
from just_distribute.errors import VersionMismatchError
from just_distribute.executors import cluster_code


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class LocalError(ValueError):
    """An exception class the workers cannot import."""


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def shift(p: Point) -> Point:
    return Point(p.x + 1, p.y * 2)


def refuse_odd(x: int) -> int:
    if x % 2:
        raise LocalError(f"odd: {x}")
    return x


def test_this_module_travels_by_value_installed_code_by_reference() -> None:
    assert not cluster_code.travels_by_reference(__name__)
    assert cluster_code.travels_by_reference("json")
    assert cluster_code.travels_by_reference("just_distribute.executors.cluster")
    assert cluster_code.travels_by_reference("numpy")
    assert cluster_code.travels_by_reference("distributed")
    assert cluster_code.dumps(json.dumps) is None  # nothing needs to go by value
    assert cluster_code.dumps([1, "a", 2.0]) is None
    assert cluster_code.dumps(square) is not None


def test_pool_with_the_callers_functions_on_a_separate_cluster(
    bare_cluster: BareCluster,
) -> None:
    with distributed.Client(bare_cluster.address, set_as_default=False, timeout=30) as c:
        # The premise: the workers really cannot import this module.
        found = c.run(lambda: __import__("importlib.util").util.find_spec(__name__) is None)
        assert found and all(found.values()), found
    with Pool(2, job="cluster", address=bare_cluster.address) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(square, range(5))) == [0, 1, 4, 9, 16]
        assert sorted(pool.imap_unordered(square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.apply(add, (5, 6)) == 11
        got: list[list[int]] = []
        done = threading.Event()
        result = pool.map_async(square, [7, 8], callback=lambda v: (got.append(v), done.set()))
        assert result.get(timeout=60) == [49, 64]
        assert done.wait(10) and got == [[49, 64]]
        # Instances of the caller's classes come back as instances of the caller's class.
        out = pool.map(shift, [Point(1, 2), Point(3, 4)])
        assert out == [Point(2, 4), Point(4, 8)] and type(out[0]) is Point
        with pytest.raises(LocalError, match="odd: 3"):
            pool.map(refuse_odd, [2, 3])


def test_decorator_and_compute_this_on_a_separate_cluster(bare_cluster: BareCluster) -> None:
    f = distribute(job="cluster", address=bare_cluster.address)(square)
    assert f(range(6)) == [0, 1, 4, 9, 16, 25]
    g = distribute(job="cluster", address=bare_cluster.address, on_error="return")(refuse_odd)
    out = g([0, 1])
    assert out[0] == 0 and isinstance(out[1], LocalError)
    assert compute_this(address=bare_cluster.address)(add)(2, 40).run(timeout=60) == 42


_TASKS = """
import helpers
from helpers import offset

def work(x):
    return helpers.double(x) + offset(x)
"""
_HELPERS = """
def double(x):
    return 2 * x

def offset(x):
    return 100
"""
_SCRIPT = """
import sys
from just_distribute import Pool
from tasks import work

if __name__ == "__main__":
    with Pool(2, job="cluster", address=sys.argv[1]) as pool:
        print(pool.map(work, range(4)))
"""


def test_a_script_with_local_modules_beside_it(bare_cluster: BareCluster, tmp_path: Path) -> None:
    for name, text in {"tasks.py": _TASKS, "helpers.py": _HELPERS, "run.py": _SCRIPT}.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    done = subprocess.run(
        [sys.executable, "run.py", bare_cluster.address], cwd=tmp_path, env=bare_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[100, 102, 104, 106]"


def test_a_module_missing_on_the_workers_is_resent_by_value(
    bare_cluster: BareCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module this process treats as installed (by reference) that the workers lack: the
    # worker's ModuleNotFoundError is answered by one resend by value, then remembered.
    (tmp_path / "installed_here_only.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import installed_here_only  # type: ignore[import-not-found]

    monkeypatch.setitem(cluster_code._decided, "installed_here_only", True)
    f = distribute(job="cluster", address=bare_cluster.address)(installed_here_only.triple)
    assert f(range(4)) == [0, 3, 6, 9]
    assert "installed_here_only" in cluster_code.by_value_modules()
    assert f(range(2)) == [0, 3]


def read_shipped() -> int:
    import importlib

    return int(importlib.import_module("shipped_pkg.values").ANSWER)


def test_ship_a_package_to_present_and_future_workers(
    bare_cluster: BareCluster, tmp_path: Path
) -> None:
    pkg = tmp_path / "shipped_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "values.py").write_text("ANSWER = 42\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ship(tmp_path / "nope", address=bare_cluster.address)
    assert ship(pkg, address=bare_cluster.address) == {"shipped_pkg"}
    assert cluster_code.travels_by_reference("shipped_pkg")
    f = distribute(job="cluster", address=bare_cluster.address, chunksize=1)(
        lambda _: read_shipped())
    assert f(range(4)) == [42] * 4
    # A worker that joins later gets it too.
    late = subprocess.Popen(
        [sys.executable, "-m", "just_distribute", "worker", bare_cluster.address,
         "--workers", "1", "--name", "late"],
        cwd=tmp_path, env=bare_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with distributed.Client(bare_cluster.address, set_as_default=False, timeout=30) as c:
            c.wait_for_workers(3, timeout=90)
            late_worker = next(a for a, w in c.scheduler_info()["workers"].items()
                               if str(w["name"]).startswith("late"))
            # (eval, a builtin: the call itself must not need this test module there)
            there = c.run(eval, "__import__('shipped_pkg.values').values.ANSWER",
                          workers=[late_worker])
            assert there == {late_worker: 42}
    finally:
        late.terminate()
        late.wait(60)


@pytest.mark.timeout(180)
def test_version_mismatch_is_one_clear_error_before_any_chunk(tmp_path: Path) -> None:
    other = tmp_path / "other-dill"
    other.mkdir()
    # A real worker that reports another dill version, as a machine with another install.
    (other / "sitecustomize.py").write_text("import dill\ndill.__version__ = '0.0.1'\n")
    where = tmp_path / "cluster"
    where.mkdir()
    cluster = BareCluster(str(where), workers=1, worker_path=(str(other),))
    try:
        marker = tmp_path / "ran"
        f = distribute(job="cluster", address=cluster.address)(
            lambda x: marker.write_text("ran") or x)
        with pytest.raises(VersionMismatchError) as info:
            f(range(3))
        message = str(info.value)
        assert f"dill {cluster_code.local_versions()['dill']} here, 0.0.1 there" in message
        assert cluster.address in message
        assert not marker.exists()
        assert os.environ.get("JUST_DISTRIBUTE_ADDRESS") is None
    finally:
        from just_distribute.executors import shutdown_all

        shutdown_all()
        cluster.stop()


@pytest.mark.timeout(180)
def test_a_worker_with_other_versions_joining_later_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other-cloudpickle"
    other.mkdir()
    (other / "sitecustomize.py").write_text(
        "import cloudpickle\ncloudpickle.__version__ = '0.0.2'\n")
    where = tmp_path / "cluster"
    where.mkdir()
    cluster = BareCluster(str(where), workers=1)
    late = None
    try:
        f = distribute(job="cluster", address=cluster.address, chunksize=1)(square)
        assert f(range(3)) == [0, 1, 4]  # checked at connect: all well
        late = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address,
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", "odd"],
            cwd=where, env=bare_env(str(other)), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        with distributed.Client(cluster.address, set_as_default=False, timeout=30) as c:
            c.wait_for_workers(2, timeout=90)
        with pytest.raises(VersionMismatchError, match=r"cloudpickle \S+ here, 0\.0\.2 there"):
            for _ in range(10):  # until a chunk lands on the late worker
                f(range(20))
    finally:
        if late is not None:
            late.terminate()
            late.wait(60)
        from just_distribute.executors import shutdown_all

        shutdown_all()
        cluster.stop()
