"""Durable progress for ``checkpoint=``: placeholder until the reliability work lands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .planning import Plan

__all__ = ["open_checkpoint"]


def open_checkpoint(path: str, fn: Callable[..., Any], plan: Plan) -> Any:
    """Open the checkpoint records for this function and input under ``path``."""
    raise NotImplementedError("checkpoint= is not implemented yet")
