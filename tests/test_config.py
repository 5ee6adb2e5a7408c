"""Options: decorator argument > ``config()`` > ``JUST_DISTRIBUTE_*`` environment > default,
and the serial debugging switch that beats them all."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from just_distribute import config, distribute
from just_distribute.config import resolve_options


def where(x: int) -> tuple[int, int]:
    return os.getpid(), threading.get_ident()



@pytest.mark.parametrize("job", ["compute", "io", "web"])
def test_config_serial_forces_the_callers_thread(job: str) -> None:
    dist = distribute(job=job, workers=2)(where)
    with config(job="serial"):
        assert set(dist(range(10))) == {(os.getpid(), threading.get_ident())}
        assert dist.report(range(3)).report.job == "serial"
    assert (os.getpid(), threading.get_ident()) not in set(dist(range(10)))


@pytest.mark.parametrize("job", ["compute", "io", "web"])
def test_environment_serial_forces_the_callers_thread(
    job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = distribute(job=job, workers=2)(where)
    monkeypatch.setenv("JUST_DISTRIBUTE_JOB", "serial")
    assert set(dist(range(10))) == {(os.getpid(), threading.get_ident())}
    monkeypatch.delenv("JUST_DISTRIBUTE_JOB")
    assert (os.getpid(), threading.get_ident()) not in set(dist(range(10)))


def test_job_serial_runs_in_the_callers_thread() -> None:
    dist = distribute(job="serial")(where)
    assert set(dist(range(5))) == {(os.getpid(), threading.get_ident())}


def test_config_workers_is_a_default_that_the_decorator_overrides() -> None:
    default = distribute(job="io")(where)
    explicit = distribute(job="io", workers=2)(where)
    with config(workers=3):
        assert default.report(range(20)).report.workers == 3
        assert explicit.report(range(20)).report.workers == 2
        with config(workers=5):
            assert default.report(range(20)).report.workers == 5
        assert default.report(range(20)).report.workers == 3


def test_precedence_environment_config_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUST_DISTRIBUTE_WORKERS", "4")
    monkeypatch.setenv("JUST_DISTRIBUTE_JOB", "io")
    assert resolve_options({}).workers == 4
    assert resolve_options({}).job == "io"
    with config(workers=6):
        assert resolve_options({}).workers == 6
        assert resolve_options({"workers": 2}).workers == 2
    assert distribute(where).report(range(8)).report.job == "io"


def test_config_follows_asyncio_tasks() -> None:
    dist = distribute(job="io", workers=2)(where)

    async def main() -> set[tuple[int, int]]:
        with config(job="serial"):
            return await asyncio.create_task(asyncio.to_thread(lambda: set(dist(range(4)))))

    # Forced serial inside the task: the calls ran in the helper thread that made them.
    ran = asyncio.run(main())
    assert len(ran) == 1
    assert next(iter(ran))[0] == os.getpid()


def test_bad_settings_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match=r"unknown option.*'wokers'"), config(wokers=2):
        pass
    with pytest.raises(ValueError, match="workers"), config(workers=0):
        pass
    with pytest.raises(TypeError, match="wokers"):
        distribute(job="io", wokers=2)  # type: ignore[call-overload]
    monkeypatch.setenv("JUST_DISTRIBUTE_WORKERS", "many")
    with pytest.raises(ValueError, match="JUST_DISTRIBUTE_WORKERS"):
        resolve_options({})


def test_unknown_job_from_config_fails_before_dispatch() -> None:
    ran: list[int] = []

    @distribute(workers=2)
    def record(x: int) -> None:
        ran.append(x)

    with config(job="ray"), pytest.raises(ValueError, match='job="cluster"'):
        record(range(5))
    assert ran == []
