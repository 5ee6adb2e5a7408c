"""The standard library's own Pool tests, run against ``just_distribute.Pool``.

CPython keeps its Pool tests in ``test._test_multiprocessing`` (``_TestPool``,
``_TestPoolWorkerErrors``, ``_TestPoolWorkerLifetime``) and runs each against a flavour by
mixing in ``ProcessesMixin`` or ``ThreadsMixin``, whose ``Pool`` attribute is the pool under
test. The mixins here do the same with ``just_distribute.Pool``: ``compute`` and
``cluster`` as the "processes" flavour, ``io`` as the "threads" flavour. The test classes
are imported, not copied.

Two of the three classes make their pools with ``multiprocessing.Pool(...)`` itself rather
than ``self.Pool``; for them the mixin points ``multiprocessing.Pool`` at the pool under
test for the duration of each test.

Left out, each by name (they read attributes private to ``multiprocessing.pool``), each
with a companion test of the same behaviour through the public API below:

- ``test_make_pool`` reads ``len(pool._pool)``; companion: ``test_pool_size_public``
  (bad sizes raise ``ValueError``; ``Pool(3)`` runs three calls at once).
- ``test_pool_worker_lifetime`` reads ``pool._pool`` and calls ``pool._repopulate_pool()``;
  companion: ``test_maxtasksperchild_apply_async_recycles`` (100 ``apply_async`` calls on
  ``Pool(3, maxtasksperchild=10)`` run in at least 10 processes).

``test_worker_finalization_via_atexit_handler_of_multiprocessing`` runs a script that
imports ``multiprocessing.Pool`` in a fresh interpreter, out of the mixin's reach; it runs
as it is, and ``test_pool_in_attribute_of_script_exits`` runs the same script with
``just_distribute.Pool``.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.pool
import os
import subprocess
import sys
import textwrap
import threading
import time
import unittest
import unittest.mock
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from just_distribute import Pool, SendError

try:
    from test import _test_multiprocessing as cpython
except ImportError as exc:  # a Python built without its test package
    pytest.skip(
        f"this interpreter has no 'test' package with the standard library's Pool tests "
        f"({exc}); install the full Python (e.g. the python3-test package) to run them",
        allow_module_level=True,
    )

#: Tests that read attributes private to multiprocessing.pool (see the module docstring).
LEFT_OUT = {"test_make_pool", "test_pool_worker_lifetime"}

_service: Any = None


@pytest.fixture(scope="module", autouse=True)
def _module_service() -> Iterator[None]:
    """A function service of this module's own: the cluster flavour's dask cluster.

    Its own, so that the 10,000 calls of ``time.sleep(300)`` that ``test_terminate``
    leaves behind cannot hold up the session's shared service if terminate() fails to
    stop them.
    """
    global _service
    yield
    if _service is not None:
        from just_distribute.executors import shutdown_all

        shutdown_all(_service.address)
        _service.stop()
        _service = None


def _cluster_address() -> str:
    global _service
    if _service is None:
        from just_distribute.service import start_service

        _service = start_service(2)
    address: str = _service.address
    return address


class _JustDistributeMixin(cpython.BaseMixin):
    """What CPython's mixins give a test class, with ``just_distribute.Pool`` as its pool."""

    job: ClassVar[str]

    @classmethod
    def make_pool(cls) -> Callable[..., Pool]:
        return functools.partial(Pool, job=cls.job)

    @classmethod
    def setUpClass(cls) -> None:
        cls.Pool = staticmethod(cls.make_pool())
        super().setUpClass()

    def setUp(self) -> None:
        name = self._testMethodName
        if name in LEFT_OUT:
            self.skipTest(f"{name} reads private attributes of multiprocessing.pool")
        # _TestPoolWorkerErrors and _TestPoolWorkerLifetime call multiprocessing.Pool.
        patcher = unittest.mock.patch.object(multiprocessing, "Pool", self.make_pool())
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()


class ComputeMixin(_JustDistributeMixin, cpython.ProcessesMixin):
    """``job="compute"``: the "processes" flavour."""

    job = "compute"


class ClusterMixin(_JustDistributeMixin, cpython.ProcessesMixin):
    """``job="cluster"`` on a real dask service: the "processes" flavour."""

    job = "cluster"

    @classmethod
    def make_pool(cls) -> Callable[..., Pool]:
        return functools.partial(Pool, job="cluster", address=_cluster_address())


class IOMixin(_JustDistributeMixin, cpython.ThreadsMixin):
    """``job="io"``: the "threads" flavour."""

    job = "io"


class TestComputePool(cpython._TestPool, ComputeMixin, unittest.TestCase):
    """``_TestPool`` on compute."""


class TestComputePoolWorkerErrors(
    cpython._TestPoolWorkerErrors, ComputeMixin, unittest.TestCase
):
    """``_TestPoolWorkerErrors`` on compute."""


class TestComputePoolWorkerLifetime(
    cpython._TestPoolWorkerLifetime, ComputeMixin, unittest.TestCase
):
    """``_TestPoolWorkerLifetime`` on compute."""


class TestIOPool(cpython._TestPool, IOMixin, unittest.TestCase):
    """``_TestPool`` on io."""


class TestClusterPool(cpython._TestPool, ClusterMixin, unittest.TestCase):
    """``_TestPool`` on cluster."""


class TestClusterPoolWorkerErrors(
    cpython._TestPoolWorkerErrors, ClusterMixin, unittest.TestCase
):
    """``_TestPoolWorkerErrors`` on cluster."""


class TestClusterPoolWorkerLifetime(
    cpython._TestPoolWorkerLifetime, ClusterMixin, unittest.TestCase
):
    """``_TestPoolWorkerLifetime`` on cluster (``maxtasksperchild`` is accepted, and logged
    as ignored: dask workers are not recycled per task)."""


def test_left_out_tests_exist() -> None:
    """Every test left out by name is one of the standard library's (not a stale name)."""
    names = {
        name
        for cls in (cpython._TestPool, cpython._TestPoolWorkerErrors,
                    cpython._TestPoolWorkerLifetime)
        for name in dir(cls)
        if name.startswith("test_")
    }
    assert names >= LEFT_OUT
    assert multiprocessing.pool.RUN == "RUN"  # test_resource_warning sets pool._state to it


# -- companions of the tests left out, and the differences the suite does not reach -------
def _arrive_and_wait(directory: str, expected: int) -> str:
    """Announce this call, then wait until ``expected`` calls run at once; who ran it."""
    me = f"{os.getpid()}-{threading.get_ident()}"
    Path(directory, me).touch()
    deadline = time.monotonic() + 30
    while len(os.listdir(directory)) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {expected} ran at once")
        time.sleep(0.01)
    return me


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io"])
def test_pool_size_public(job: str, tmp_path: Path) -> None:
    """Companion of ``test_make_pool``: bad sizes refused; ``Pool(3)`` runs three at once."""
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="processes"):
            Pool(bad, job=job)
    with Pool(3, job=job) as pool:
        who = pool.starmap(_arrive_and_wait, [(str(tmp_path), 3)] * 3, chunksize=1)
    assert len(set(who)) == 3


@pytest.mark.timeout(120)
def test_maxtasksperchild_apply_async_recycles() -> None:
    """Companion of ``test_pool_worker_lifetime``: a task is one ``apply_async`` call."""
    with Pool(3, maxtasksperchild=10, job="compute") as pool:
        results = [pool.apply_async(os.getpid) for _ in range(100)]
        pids = [r.get(timeout=60) for r in results]
    assert len(set(pids)) >= 10, sorted(set(pids))
    assert max(pids.count(pid) for pid in set(pids)) <= 10


@pytest.mark.timeout(120)
def test_pool_in_attribute_of_script_exits(tmp_path: Path) -> None:
    """The script of ``test_worker_finalization_via_atexit_handler_of_multiprocessing``,
    with ``just_distribute.Pool``: a pool left in an object's attribute at exit."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from just_distribute import Pool
        problem = None
        class A:
            def __init__(self):
                self.pool = Pool(processes=1)
        def test():
            global problem
            problem = A()
            print(problem.pool.map(float, tuple(range(10))))
        if __name__ == "__main__":
            test()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str([float(i) for i in range(10)])


@pytest.mark.timeout(60)
def test_terminate_on_io_does_not_hold_the_exit(tmp_path: Path) -> None:
    """A thread cannot be killed, but an abandoned one no longer delays the exit."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import time
        from just_distribute import Pool
        if __name__ == "__main__":
            pool = Pool(2, job="io")
            result = pool.map_async(time.sleep, [300] * 4, chunksize=1)
            time.sleep(0.5)
            pool.terminate()
            print("terminated", flush=True)
    """))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "terminated"
    assert time.monotonic() - started < 30  # not the 300 s of the abandoned calls


@pytest.mark.timeout(180)
def test_terminate_on_cluster_stops_running_tasks(cluster_address: str) -> None:
    """Cancelled and stopped: the next pool on the cluster is not stuck behind them."""
    pool = Pool(2, job="cluster", address=cluster_address)
    pending = pool.map_async(time.sleep, [300] * 50, chunksize=1)
    time.sleep(2)  # let both workers start a call
    pool.terminate()
    pool.join()
    assert pending.ready() and not pending.successful()
    started = time.monotonic()
    with Pool(2, job="cluster", address=cluster_address) as after:
        assert after.map(abs, [-1, -2, -3], chunksize=1) == [1, 2, 3]
    assert time.monotonic() - started < 120


def _count_up_to(n: int) -> Iterator[int]:
    yield from range(n)
    raise cpython.SayWhenError("the input broke")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io", "serial"])
def test_imap_yields_what_came_before_a_broken_input(job: str) -> None:
    with Pool(2, job=job) as pool:
        it = pool.imap(abs, _count_up_to(5), 1)
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(cpython.SayWhenError):
            next(it)
        seen: list[int] = []
        with pytest.raises(cpython.SayWhenError):
            for value in pool.imap_unordered(abs, _count_up_to(5), 1):
                seen.append(value)
        assert sorted(seen) == [0, 1, 2, 3, 4]


def fail_now_or_write_later(path: str) -> str:
    if not path:
        raise ValueError("the first call fails at once")
    time.sleep(0.5)
    Path(path).write_text("done")
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io"])
def test_map_lets_the_other_calls_finish_then_raises(job: str, tmp_path: Path) -> None:
    late = tmp_path / "late"
    with Pool(2, job=job) as pool:
        with pytest.raises(ValueError, match="fails at once"):
            pool.map(fail_now_or_write_later, ["", str(late)], chunksize=1)
        assert late.read_text() == "done"  # it ran to its end before map raised
        with pytest.raises(ValueError, match="fails at once"):
            pool.map_async(fail_now_or_write_later, ["", str(late) + "2"], 1).get(60)
        assert Path(str(late) + "2").read_text() == "done"


class Unpicklable:
    def __reduce__(self) -> Any:
        raise RuntimeError("no pickles here")


def give_lambda() -> Callable[[], int]:
    return lambda: 42


def raise_here() -> None:
    raise KeyError("from the worker")


@pytest.mark.timeout(120)
def test_pickling_errors_and_remote_tracebacks_as_in_multiprocessing(
    cluster_address: str,
) -> None:
    pools = [Pool(2, job="compute"), Pool(2, job="cluster", address=cluster_address)]
    for pool in pools:
        with pool:
            with pytest.raises(RuntimeError, match="no pickles here") as info:
                pool.map(abs, [Unpicklable()] * 3)
            assert not isinstance(info.value, SendError)
            assert any("cannot send" in note for note in info.value.__notes__)
            with pytest.raises(RuntimeError, match="no pickles here"):
                pool.apply(abs, (Unpicklable(),))
            for _ in range(3):  # the pool keeps working
                with pytest.raises(multiprocessing.pool.MaybeEncodingError) as bad:
                    pool.apply(give_lambda)
                assert "lambda" in bad.value.value and bad.value.exc
            assert pool.map(abs, [-1, -2]) == [1, 2]
            with pytest.raises(KeyError) as raised:
                pool.apply(raise_here)
            cause = raised.value.__cause__
            assert type(cause) is multiprocessing.pool.RemoteTraceback
            assert 'raise KeyError("from the worker")' in cause.tb


def test_a_running_pool_collected_warns() -> None:
    pool = Pool(1, job="io")
    assert pool.map(abs, [-1]) == [1]
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()
    closed = Pool(1, job="io")
    closed.close()
    closed.join()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del closed
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
