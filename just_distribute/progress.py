"""Progress displays for ``progress=``: a tqdm bar, or the user's own callable.

The engine calls ``update(n)`` as calls finish (``n`` calls, or batch elements): when a
chunk finishes, and while a chunk runs, as its worker reports how many of its calls are done
(at most every 0.1 s per chunk, on every job), each call counted once; and ``close()``
exactly once when the run ends, whether it finished, failed or was abandoned. Both run in
the thread that consumes the results (the caller's).
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from just_distribute.config import ProgressOption

__all__ = ["ProgressBar", "ProgressCallback", "ProgressOption", "make_progress"]


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (the test ``tqdm.auto`` makes, by modules)."""
    return "ipykernel.zmqshell" in sys.modules or (
        "IPython.utils._process_emscripten" in sys.modules
    )


def _tqdm_class() -> Any:
    """The widget bar in a notebook with ipywidgets, else the text bar.

    ``tqdm.auto`` in a notebook without ipywidgets warns (``TqdmWarning``) before falling
    back to text: choose the text bar first, quietly (``pip install
    just-distribute[notebook]`` brings the widget).
    """
    # Imported lazily: the import costs ~50 ms.
    if _in_notebook():
        try:
            importlib.import_module("ipywidgets")
        except ImportError:
            from tqdm.std import tqdm as text_bar

            return text_bar
    from tqdm.auto import tqdm

    return tqdm


class ProgressBar:
    """A tqdm bar: a widget in a notebook with ipywidgets installed, else text.

    Args:
        total: the units to expect, or ``None`` for a stream of unknown length (the bar
            then counts without a percentage).
        desc: the label in front of the bar (the function's name).
        unit: what is counted: ``"call"``, or ``"element"`` for batch calls.
        file: where the text bar goes (default: standard error, as tqdm does).
    """

    def __init__(
        self, total: int | None, desc: str, unit: str, file: IO[str] | None = None
    ) -> None:
        self._bar: Any = _tqdm_class()(
            total=total, desc=desc, unit=unit, dynamic_ncols=True, file=file
        )
        self._closed = False
        self._shown = 0.0

    @property
    def n(self) -> int:
        """The units counted so far."""
        return int(self._bar.n)

    def update(self, n: int) -> None:
        """Count ``n`` more units as done."""
        if n:
            self._bar.update(n)

    def show_values(self, values: dict[str, Any]) -> None:
        """Show the latest :func:`~just_distribute.update` values after the bar."""
        if self._closed:
            return
        now = time.monotonic()
        # Redrawing costs far more than an update: at most ten times a second.
        redraw = now - self._shown >= 0.1
        if redraw:
            self._shown = now
        self._bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=redraw)

    def close(self) -> None:
        """Draw the final state and release the bar (idempotent)."""
        if not self._closed:
            self._closed = True
            self._bar.close()


class ProgressCallback:
    """Calls ``fn(done, total)`` as calls finish: after every finished chunk, and while a
    chunk runs, at most every 0.1 s per chunk.

    ``done`` is the running count of calls (or batch elements); ``total`` is the expected
    count, or ``None`` when the input's length is unknown. An exception raised by ``fn``
    stops the run and reaches the caller, like any error of the caller's own code.
    """

    def __init__(self, fn: Callable[[int, int | None], None], total: int | None) -> None:
        self._fn = fn
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        """Count ``n`` more units and report the new total to ``fn``."""
        if not n:
            return
        with self._lock:
            self._done += n
            done = self._done
        self._fn(done, self._total)

    def close(self) -> None:
        """Nothing to release: the callback has seen every update."""


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 20 else text[:19] + "…"


def make_progress(
    option: ProgressOption, total: int | None, desc: str, unit: str
) -> ProgressBar | ProgressCallback | None:
    """Build the display that ``progress=option`` asks for, or ``None`` for none.

    Args:
        option: ``True`` for a tqdm bar, a callable ``fn(done, total)``, ``False`` for none.
        total: the units to expect, ``None`` if unknown.
        desc: the bar's label.
        unit: the unit counted (``"call"`` or ``"element"``).

    Raises:
        TypeError: ``option`` is neither a bool nor a callable.
    """
    if option is True:
        return ProgressBar(total, desc, unit)
    if option is False or option is None:
        return None
    if callable(option):
        return ProgressCallback(option, total)
    raise TypeError(
        f"progress= takes True (a progress bar), False, or a callable fn(done, total); "
        f"got {option!r}"
    )
