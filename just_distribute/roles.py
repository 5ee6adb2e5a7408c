"""Argument roles: which role a parameter's hint gives, why, and what a ready-made batch is.

An *element* parameter takes one item per call; a *batch* parameter a slice of a collection
(see the guide's "Argument roles"). Knows nothing of calls or cutting: that is
:mod:`just_distribute.planning`.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import inspect
import typing
from collections.abc import Callable
from typing import Any

__all__ = [
    "Role", "annotation_role", "is_frame_hint", "is_pandas", "ready_made_test", "role_reason",
    "string_role", "type_name",
]

_ATOMIC: tuple[type, ...] = (str, bytes, bytearray, memoryview)


class Role(enum.Enum):
    """How a distributed parameter receives its part of the input."""

    ELEMENT = "element"
    BATCH = "batch"


def annotation_role(tp: Any) -> Role:
    """Decide the role of a parameter from its (resolved) annotation."""
    if tp is inspect.Parameter.empty or tp is Any or isinstance(tp, typing.TypeVar):
        return Role.ELEMENT
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return annotation_role(typing.get_args(tp)[0])
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if members and all(annotation_role(a) is Role.BATCH for a in members):
            return Role.BATCH
        return Role.ELEMENT
    if origin is tuple:
        args = typing.get_args(tp)
        # tuple[int, str] is a record (one element); tuple[int, ...] is a collection.
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return Role.ELEMENT
    base = origin if origin is not None else tp
    if not isinstance(base, type):
        return Role.ELEMENT
    if issubclass(base, _ATOMIC) or issubclass(base, cabc.Mapping):
        return Role.ELEMENT
    if issubclass(base, cabc.Iterable):
        return Role.BATCH
    return Role.ELEMENT


def string_role(text: str) -> Role:
    """Best guess for an annotation string that cannot be evaluated."""
    head = text.replace("typing.", "").split("[", 1)[0].strip()
    batch_names = {
        "list", "List", "tuple", "Tuple", "set", "Set", "frozenset", "FrozenSet", "Sequence",
        "Iterable", "Collection", "MutableSequence", "ndarray", "np.ndarray", "numpy.ndarray",
        "Series", "pd.Series", "DataFrame", "pd.DataFrame", "deque",
    }
    return Role.BATCH if head in batch_names else Role.ELEMENT


def strip_hint(tp: Any) -> Any:
    """The annotation behind ``Annotated[...]`` and ``Optional[...]`` (one member only)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union or type(tp).__name__ == "UnionType":
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def role_reason(tp: Any) -> str:
    """Why a hint gives its role, in words for an error message."""
    if tp is inspect.Parameter.empty:
        return "no type hint"
    if isinstance(tp, str):
        return f"hint {tp!r} (not resolvable) read by its name"
    name = str(tp).replace("typing.", "") if typing.get_origin(tp) else type_name(tp)
    if tp is Any or isinstance(tp, typing.TypeVar):
        return f"hint {name} is not a collection"
    base = typing.get_origin(strip_hint(tp)) or strip_hint(tp)
    if isinstance(base, type) and issubclass(base, _ATOMIC):
        return f"hint {name} is taken whole although iterable"
    if isinstance(base, type) and issubclass(base, cabc.Mapping):
        return f"hint {name} is a Mapping, taken whole"
    if annotation_role(tp) is Role.BATCH:
        return f"hint {name} is a collection"
    return f"hint {name} is not a collection"


def is_pandas(value: Any, *names: str) -> bool:
    kind = type(value)
    return kind.__module__.startswith("pandas") and any(
        c.__name__ in names for c in kind.__mro__
    )


def is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def is_frame_hint(tp: Any) -> bool:
    base = strip_hint(tp)
    return isinstance(base, type) and base.__module__.startswith("pandas") and (
        base.__name__ in ("DataFrame", "Series")
    )


def ready_made_test(tp: Any) -> Callable[[Any], bool] | None:
    """For a batch hint: a test telling a ready-made batch from an element, or ``None``.

    ``ndarray``: an item that is an array is a batch. ``DataFrame``/``Series``: an item that
    is a frame or a series. ``list[int]`` and other collections of a concrete element type:
    an item that is a collection but not of the element type (``[1, 2]`` for ``list[int]``;
    for ``list[list[int]]`` the same item is an element).
    """
    tp = strip_hint(tp)
    if isinstance(tp, str):
        return None
    origin = typing.get_origin(tp)
    base = origin if origin is not None else tp
    if not isinstance(base, type):
        return None
    if base.__module__ == "numpy" and base.__name__ == "ndarray":
        return is_array
    if base.__module__.startswith("pandas") and base.__name__ in ("DataFrame", "Series"):
        return lambda v: is_pandas(v, "DataFrame", "Series")
    args = typing.get_args(tp)
    if not args:
        return None
    inner = strip_hint(args[0])
    inner = typing.get_origin(inner) or inner
    if not isinstance(inner, type) or inner is object:
        return None
    containers = (list, tuple, set, frozenset, range)

    def test(value: Any) -> bool:
        return isinstance(value, containers) and not isinstance(value, inner)

    return test


def type_name(tp: Any) -> str:
    """A hint's name for a message."""
    if tp is inspect.Parameter.empty:
        return "value"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
