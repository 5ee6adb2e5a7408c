"""Progress displays for ``progress=``: a tqdm bar, or the user's own callable."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["make_progress"]


class _Bar:
    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        from tqdm.auto import tqdm  # imported lazily: the import costs ~50 ms

        self._bar: Any = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class _Callback:
    def __init__(self, fn: Callable[[int, int | None], None], total: int | None) -> None:
        self._fn = fn
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self._done += n
            done = self._done
        self._fn(done, self._total)

    def close(self) -> None:
        pass


def make_progress(
    option: bool | Callable[[int, int | None], None], total: int | None, desc: str, unit: str
) -> _Bar | _Callback | None:
    """Build the display that ``progress=option`` asks for, or ``None`` for none.

    A callable is called as ``fn(done, total)`` after every finished chunk (``total`` is
    ``None`` when the input's length is unknown).
    """
    if option is True:
        return _Bar(total, desc, unit)
    if callable(option):
        return _Callback(option, total)
    return None
