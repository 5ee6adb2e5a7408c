"""An argument that cannot be sent fails in the caller with a note naming its call, on
every job that sends arguments (one encoder for them all: ``dumps_columns``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from just_distribute import SendError, distribute


def identity(x: Any) -> Any:
    return x


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["compute", "cluster"])
def test_an_unsendable_argument_names_its_call(job: str, request: pytest.FixtureRequest) -> None:
    where: dict[str, Any] = {"workers": 2}
    if job == "cluster":
        where = {"address": request.getfixturevalue("cluster_address")}
    f = distribute(identity, job=job, chunksize=3, **where)
    with pytest.raises(SendError) as info:
        f([1, 2, 3, 4, threading.Lock(), 6])
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "positional argument 1 (lock) cannot be sent" in str(info.value)
    assert "raised by call 4: identity(x=<unlocked" in notes
