"""``Pool``: a drop-in for ``multiprocessing.Pool`` over any job, and its moving parts.

- :mod:`~just_distribute.pool.pool`: the :class:`Pool` class;
- :mod:`~just_distribute.pool.support`: async results, the callback thread, the call
  adapters of ``starmap`` and ``apply``, the executor wrapper that ``terminate()`` uses;
- :mod:`~just_distribute.pool.stream`: what ``imap`` reads from;
- :mod:`~just_distribute.pool.feed`: ``apply_async`` calls fed to the engine.
"""

from __future__ import annotations

from just_distribute.errors import PoolTerminatedError
from just_distribute.pool.pool import Pool
from just_distribute.pool.stream import IMapIterator
from just_distribute.pool.support import AsyncResult

__all__ = ["AsyncResult", "IMapIterator", "Pool", "PoolTerminatedError"]
