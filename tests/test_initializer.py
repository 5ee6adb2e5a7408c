"""One initializer mechanism: keyed by ``(initializer, initargs)``, however it is reached."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from just_distribute import distribute


def record(directory: str) -> None:
    Path(directory, f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex}").touch()




def runs(directory: Path) -> list[str]:
    return ["-".join(p.name.split("-")[:2]) for p in directory.iterdir()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "io", "web", "serial"])
def test_a_methods_initializer_runs_once_per_worker_however_often_it_is_reached(
    job: str, tmp_path: Path
) -> None:
    class Model:
        @distribute(job=job, workers=2, chunksize=1, initializer=record,
                    initargs=(str(tmp_path),))
        def predict(self, x: int) -> int:
            return x + 1

    model = Model()
    for _ in range(5):  # each attribute access makes a new bound Distributed
        assert model.predict([1, 2, 3, 4]) == [2, 3, 4, 5]
    assert model.predict.with_options(chunksize=2)([1, 2]) == [2, 3]
    seen = runs(tmp_path)
    assert len(seen) == len(set(seen)), f"a worker ran the initializer twice: {seen}"
    assert 1 <= len(seen) <= 2


@pytest.mark.timeout(120)
def test_two_functions_with_the_same_initializer_share_its_run(tmp_path: Path) -> None:
    opts = {"job": "compute", "workers": 2, "chunksize": 1, "initializer": record,
            "initargs": (str(tmp_path),)}
    f = distribute(abs, **opts)
    g = distribute(round, **opts)
    assert f([-1, -2, -3, -4]) == [1, 2, 3, 4] and g([1.4, 2.6]) == [1, 3]
    seen = runs(tmp_path)
    assert len(seen) == len(set(seen)) and 1 <= len(seen) <= 2
