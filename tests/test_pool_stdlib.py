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
with a companion test of the same behaviour through the public API in ``tests/test_pool.py``:

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
import multiprocessing
import multiprocessing.pool
import unittest
import unittest.mock
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from just_distribute import Pool

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
