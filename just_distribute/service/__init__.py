"""The function service: a dask scheduler plus N workers that each run one call at a time.

- :mod:`~just_distribute.service.serve`: the service process (``just-distribute cluster``);
- :mod:`~just_distribute.service.launch`: :func:`start_service` and :class:`ServiceHandle`,
  to run one from a program (the embedded cluster of ``job="cluster"`` is one);
- :mod:`~just_distribute.service.worker`: ``just-distribute worker``, joining more workers;
- :mod:`~just_distribute.service.tls`: certificates and dask security settings.

The names below load their module on first use, so ``import just_distribute.service``
does not import dask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from just_distribute.service.launch import ServiceHandle, on_stop, start_service
    from just_distribute.service.serve import configure, insecure_warning, main, serve

__all__ = ["ServiceHandle", "configure", "insecure_warning", "main", "on_stop", "serve",
           "start_service"]

_WHERE = {
    "ServiceHandle": "launch", "on_stop": "launch", "start_service": "launch",
    "configure": "serve", "insecure_warning": "serve", "main": "serve", "serve": "serve",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value
