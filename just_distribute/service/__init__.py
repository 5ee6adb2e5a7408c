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

from typing import TYPE_CHECKING

from just_distribute._lazy import lazy_names

if TYPE_CHECKING:
    from just_distribute.service.launch import ServiceHandle, on_stop, start_service
    from just_distribute.service.serve import configure, insecure_warning, main, serve

__all__ = ["ServiceHandle", "configure", "insecure_warning", "main", "on_stop", "serve",
           "start_service"]

_WHERE = {
    "ServiceHandle": "launch", "on_stop": "launch", "start_service": "launch",
    "configure": "serve", "insecure_warning": "serve", "main": "serve", "serve": "serve",
}


__getattr__ = lazy_names(__name__, _WHERE)
