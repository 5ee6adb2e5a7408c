"""From a signature, its type hints and the arguments of one call to a stream of calls.

A positional argument is distributed, a keyword argument is a constant. The annotation of a
distributed parameter gives its role: *element* (one item per call) or *batch* (a slice of a
collection per call). Every check that can fail happens here, in the caller, before any
work is dispatched.
"""

from __future__ import annotations

import collections.abc as cabc
import functools
import inspect
import itertools
import reprlib
import sys
import threading
import typing
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from just_distribute.roles import (
    Role,
    annotation_role,
    is_frame_hint,
    is_pandas,
    ready_made_test,
    role_reason,
    string_role,
    type_name,
)

__all__ = [
    "CallFeed", "FunctionInfo", "Plan", "Role", "analyse", "annotation_role", "make_plan",
]

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlist = 4
_short.maxtuple = 4


@dataclass(frozen=True)
class FunctionInfo:
    """The signature of a function and the role of each of its parameters."""

    name: str
    signature: inspect.Signature
    roles: Mapping[str, Role]
    annotations: Mapping[str, Any]


def analyse(fn: Callable[..., Any]) -> FunctionInfo:
    """Read the signature and resolve the type hints of ``fn`` (once, at decoration)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of {fn!r}: {exc}") from exc
    target = inspect.unwrap(fn) if not inspect.ismethod(fn) else fn.__func__
    try:
        hints: dict[str, Any] = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    roles: dict[str, Role] = {}
    annotations: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        tp = hints.get(name, param.annotation)
        annotations[name] = tp
        roles[name] = string_role(tp) if isinstance(tp, str) else annotation_role(tp)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return FunctionInfo(name, signature, roles, annotations)


def short_repr(value: Any) -> str:
    """A repr short enough for an error message."""
    return _short.repr(value)


def _sliceable(col: Any) -> bool:
    return isinstance(col, (list, tuple, range)) or type(col).__module__ == "numpy"


def _batch_slicer(coll: Any) -> tuple[int, Callable[[int, int], Any]]:
    """Return the length of a flat collection and a function cutting ``[a:b]`` of it."""
    if hasattr(coll, "iloc") and hasattr(coll, "__len__"):
        return len(coll), lambda a, b: coll.iloc[a:b]
    if isinstance(coll, (set, frozenset)):
        items, kind = list(coll), type(coll)
        return len(items), lambda a, b: kind(items[a:b])
    if hasattr(coll, "__len__") and hasattr(coll, "__getitem__") and not isinstance(
        coll, cabc.Mapping
    ):
        try:
            coll[0:0]
        except Exception:
            pass
        else:
            return len(coll), lambda a, b: coll[a:b]
    items = list(coll)
    return len(items), lambda a, b: items[a:b]


def size_of(value: Any) -> int:
    """The bytes a value's data takes, cheaply: an array's ``nbytes``, a pandas object's
    shallow memory use, a ``bytes``-like or ``str`` length, else ``sys.getsizeof``."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if is_pandas(value, "DataFrame") or is_pandas(value, "Series"):
        used = value.memory_usage(deep=False)
        return int(used.sum() if hasattr(used, "sum") else used)
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value)
    return sys.getsizeof(value)


def cut_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ranges covering ``range(n)``, sizes differing by at most one."""
    size, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class CallFeed:
    """A source of calls that others fill while the run goes on (``Pool.apply_async``).

    :meth:`put` queues one call's argument and returns its index in the run; the engine
    takes what is queued, as many calls as its next chunk holds, without waiting, and is
    woken when a call arrives at an empty feed. The run ends once the feed is closed and
    every call taken has finished.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._count = 0
        self._closed = False
        self._wake: Callable[[], None] | None = None

    def put(self, item: Any) -> int:
        """Queue a call with argument ``item``; its index in the run.

        Raises:
            ValueError: the feed is closed.
        """
        with self._lock:
            if self._closed:
                raise ValueError("this feed of calls is closed")
            index = self._count
            self._count += 1
            self._items.append(item)
            wake = self._wake if len(self._items) == 1 else None
        if wake is not None:  # the engine took everything before: it may be waiting
            wake()
        return index

    def close(self) -> tuple[int, list[Any]]:
        """Take no more calls; return those queued and not yet taken (they will not run),
        as ``(index of the first, items)``."""
        with self._lock:
            self._closed = True
            start = self._count - len(self._items)
            dropped, self._items = list(self._items), deque()
            wake = self._wake
        if wake is not None:
            wake()
        return start, dropped

    def finish(self) -> None:
        """Take no more calls; those queued still run."""
        with self._lock:
            self._closed = True
            wake = self._wake
        if wake is not None:
            wake()

    @property
    def closed(self) -> bool:
        """Whether it takes no more calls."""
        return self._closed

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever a call arrives at an empty feed, or it is closed."""
        with self._lock:
            self._wake = wake

    def take(self, limit: int) -> tuple[int, list[Any]] | None:
        """Up to ``limit`` queued calls as ``(index of the first, items)``, at once.

        Returns ``None`` once the feed is closed and empty; ``items`` is empty when nothing
        is queued right now.
        """
        with self._lock:
            if not self._items:
                return None if self._closed else (self._count, [])
            n = min(limit, len(self._items))
            start = self._count - len(self._items)
            items = [self._items.popleft() for _ in range(n)]
            return start, items


@dataclass
class Plan:
    """The calls of one invocation, as columns: one iterable per distributed parameter.

    Attributes:
        fn: the function with its keyword constants bound.
        params: the name of the parameter behind each column.
        columns: one sequence (or one-shot iterator, when streaming) per parameter.
        n: the number of calls, or ``None`` when an iterator's length is unknown.
        batch_columns: indexes of columns whose items are batches (for progress counts).
        total_units: elements to report progress in (calls, or batch elements).
        flatten: concatenate per-call results.
        roles_note: each distributed parameter's role and why, for error notes.
        feed: the source of the calls instead of ``columns``, while a run goes on.
    """

    fn: Callable[..., Any]
    name: str
    params: list[str]
    columns: list[Any]
    n: int | None
    batch_columns: list[int] = field(default_factory=list)
    total_units: int | None = None
    flatten: bool = False
    roles_note: str = ""
    feed: CallFeed | None = None

    def chunks(
        self, next_size: Callable[[], int]
    ) -> Iterator[tuple[int, tuple[Any, ...]] | None]:
        """Yield ``(index of first call, columns of the chunk)``, asking for each size.

        With a :attr:`feed`, ``None`` means that no call is waiting right now.
        """
        if self.feed is not None:
            while (taken := self.feed.take(next_size())) is not None:
                yield (taken[0], (taken[1],)) if taken[1] else None
            return
        start = 0
        if self.n is not None and all(_sliceable(c) for c in self.columns):
            while start < self.n:
                stop = min(self.n, start + next_size())
                yield start, tuple(c[start:stop] for c in self.columns)
                start = stop
            return
        iters = [iter(c) for c in self.columns]
        while True:
            size = next_size()
            parts = tuple(list(itertools.islice(it, size)) for it in iters)
            lengths = {len(p) for p in parts}
            if len(lengths) > 1:
                longest = max(lengths)
                detail = ", ".join(
                    f"{p!r} had at least {start + len(part)}"
                    if len(part) == longest
                    else f"{p!r} ran out after {start + len(part)}"
                    for p, part in zip(self.params, parts, strict=True)
                )
                exc = ValueError(
                    f"{self.name}(): the distributed arguments have different lengths "
                    f"({detail}); every positional argument needs one item per call"
                )
                if self.roles_note:
                    exc.add_note(self.roles_note)
                raise exc
            m = lengths.pop() if lengths else 0
            if m == 0:
                return
            yield start, parts
            start += m

    def call_bytes(self) -> int | None:
        """About how many bytes one call's arguments hold, judged by the first call; ``None``
        when that cannot be seen without consuming an iterator (or there is no call)."""
        if self.feed is not None or not self.n:
            return None
        total = 0
        for col in self.columns:
            if not _sliceable(col):
                return None
            total += size_of(col[0])
        return total

    def weight(
        self, columns: Sequence[Sequence[Any]], offset: int = 0, count: int | None = None
    ) -> int:
        """How many progress units calls ``offset:offset+count`` of a chunk are worth."""
        m = len(columns[0]) - offset if count is None else count
        if not self.batch_columns:
            return m
        col = columns[self.batch_columns[0]]
        return sum(len(col[i]) for i in range(offset, offset + m))

    def describe_call(self, columns: Sequence[Sequence[Any]], j: int) -> str:
        """``name=value, ...`` for call ``j`` of a chunk, short enough for a message."""
        return ", ".join(
            f"{p}={short_repr(c[j])}" for p, c in zip(self.params, columns, strict=True)
        )


def _not_iterable(info: FunctionInfo, name: str, value: Any) -> TypeError:
    return TypeError(
        f"{info.name}() parameter {name!r} is distributed (it was passed positionally), so it "
        f"takes an iterable with one {type_name(info.annotations.get(name))} per call; got "
        f"{type(value).__name__} {short_repr(value)}. Pass a list (or any iterable), or pass "
        f"it by keyword ({name}=...) to give every call the same value."
    )


def make_plan(
    info: FunctionInfo,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    workers: Callable[[], int],
    autobatch: bool,
    batches: int | None,
    flatten: bool,
    materialize: bool,
) -> Plan:
    """Bind one invocation's arguments and cut them into columns of calls.

    Raises:
        TypeError: the arguments do not bind, or a distributed argument is not iterable.
        ValueError: the lengths of the distributed arguments do not fit together.
    """
    try:
        info.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{info.name}(): {exc}") from None
    positional = [
        p
        for p in info.signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    names: list[str] = []
    for i in range(len(args)):
        p = positional[min(i, len(positional) - 1)]
        extra = i - positional.index(p)
        names.append(p.name if p.kind is not p.VAR_POSITIONAL else f"{p.name}[{extra}]")
    if not args:
        raise TypeError(
            f"{info.name}() got no positional argument to distribute over: positional "
            f"arguments are split into calls, keyword arguments are constants. Pass the "
            f"iterable(s) positionally, or use .submit(...) for one plain call."
        )
    bound_fn = functools.partial(fn, **kwargs) if kwargs else fn

    def role(name: str) -> Role:
        return info.roles.get(name.split("[", 1)[0], Role.ELEMENT)

    elements: list[int] = []
    batch_idx: list[int] = []
    columns: list[Any] = list(args)
    hints = {n: info.annotations.get(n.split("[", 1)[0], inspect.Parameter.empty) for n in names}
    reasons = {n: f"{n}: {role(n).value} — {role_reason(hints[n])}" for n in names}
    try:
        for i, (name, value) in enumerate(zip(names, args, strict=True)):
            is_batch = role(name) is Role.BATCH
            hint = hints[name]
            if not is_batch and isinstance(value, (str, bytes, bytearray)):
                raise TypeError(
                    f"{info.name}() parameter {name!r} is distributed (it was passed positionally) "
                    f"and got a single {type(value).__name__} {short_repr(value)}, which would be "
                    f"split into characters. Pass a list of them, or pass it by keyword "
                    f"({name}=...) to give every call the same value."
                )
            if isinstance(value, cabc.Mapping):
                raise TypeError(
                    f"{info.name}() parameter {name!r} is distributed (it was passed positionally) "
                    f"and got a single {type(value).__name__} {short_repr(value)}, which would be "
                    f"split into its keys. Pass a list of mappings (one per call), "
                    f"list(d.values()) or list(d.items()) for one call per entry, or pass it by "
                    f"keyword ({name}=...) to give every call the same value."
                )
            try:
                iter(value)
            except TypeError:
                raise _not_iterable(info, name, value) from None
            if is_batch and autobatch:
                ready = ready_made_test(hint)
                if is_pandas(value, "GroupBy") and is_frame_hint(hint):
                    # One call per group; the keys are the GroupBy's own, in its order.
                    columns[i] = [group for _, group in value]
                    reasons[name] += ", given a GroupBy: one call per group"
                    elements.append(i)
                    continue
                if ready is not None:
                    made, columns[i] = _ready_made(columns[i], ready, info.name, name)
                    if made:
                        reasons[name] += (
                            ", given items that are already batches: one call per item "
                            "(as autobatch=False)"
                        )
                        elements.append(i)
                        continue
                reasons[name] += ", cut into batches (autobatch)"
                batch_idx.append(i)
            else:
                if is_batch:
                    reasons[name] += ", given ready-made batches (autobatch=False)"
                elements.append(i)
    except TypeError as exc:
        exc.add_note("just_distribute: argument roles: " + "; ".join(reasons.values()))
        raise
    roles_note = "just_distribute: argument roles: " + "; ".join(reasons.values())
    try:
        plan = _cut(
            info, bound_fn, names, columns, elements, batch_idx, role,
            workers=workers, batches=batches, flatten=flatten, materialize=materialize,
        )
    except ValueError as exc:
        exc.add_note(roles_note)
        raise
    plan.roles_note = roles_note
    return plan


def _ready_made(
    value: Any, ready: Callable[[Any], bool], fn_name: str, name: str
) -> tuple[bool, Any]:
    """Whether ``value`` holds ready-made batches (judged by its first item), and the value.

    A one-shot iterator is peeked at and handed back whole; a sequence whose first item is a
    batch must hold batches only (a mix is refused: no guess is safe).
    """
    if isinstance(value, cabc.Sequence):
        if not len(value) or not ready(value[0]):
            return False, value
        odd = next((j for j, item in enumerate(value) if not ready(item)), None)
        if odd is not None:
            raise TypeError(
                f"{fn_name}() parameter {name!r} got a sequence whose first item is a "
                f"ready-made batch but whose item {odd} is {short_repr(value[odd])}. Pass "
                f"either one flat collection (cut into batches) or a list of batches only."
            )
        return True, value
    if hasattr(value, "__len__") or hasattr(value, "iloc"):
        return False, value  # a set, a frame, an array: one flat collection
    it = iter(value)
    try:
        first = next(it)
    except StopIteration:
        return False, []
    return ready(first), itertools.chain([first], it)


def _cut(
    info: FunctionInfo,
    bound_fn: Callable[..., Any],
    names: list[str],
    columns: list[Any],
    elements: list[int],
    batch_idx: list[int],
    role: Callable[[str], Role],
    *,
    workers: Callable[[], int],
    batches: int | None,
    flatten: bool,
    materialize: bool,
) -> Plan:
    """Check the lengths of the distributed columns and cut the batch ones."""
    if not batch_idx:
        # Element calls (also batch parameters with autobatch=False: items are batches).
        lengths: dict[str, int | None] = {}
        for i in elements:
            col = columns[i]
            if materialize and not hasattr(col, "__len__"):
                col = columns[i] = list(col)
            lengths[names[i]] = len(col) if hasattr(col, "__len__") else None
        known = {v for v in lengths.values() if v is not None}
        if len(known) > 1:
            raise ValueError(
                f"{info.name}(): the distributed (positional) arguments must have the same "
                f"length, one item per call; got "
                + ", ".join(f"{k!r} with {'?' if v is None else v}" for k, v in lengths.items())
            )
        n = known.pop() if known and all(v is not None for v in lengths.values()) else None
        if n is None and known and materialize:
            n = next(iter(known))
        batch_cols = [i for i in elements if role(names[i]) is Role.BATCH]
        plan = Plan(bound_fn, info.name, names, columns, n, batch_cols, flatten=flatten)
        if n is not None and not batch_cols:
            plan.total_units = n
        elif n is not None and all(hasattr(columns[i], "__len__") for i in batch_cols):
            try:
                plan.total_units = sum(len(b) for b in columns[batch_cols[0]])
            except TypeError:
                plan.total_units = None
        return plan

    # Autobatch: flat collections cut into k contiguous batches.
    slicers: dict[int, tuple[int, Callable[[int, int], Any]]] = {
        i: _batch_slicer(columns[i]) for i in batch_idx
    }
    for i in elements:
        if not hasattr(columns[i], "__len__"):
            columns[i] = list(columns[i])
    flat = {names[i]: slicers[i][0] for i in batch_idx}
    if elements:
        k_lengths = {names[i]: len(columns[i]) for i in elements}
        if len(set(k_lengths.values())) > 1:
            raise ValueError(
                f"{info.name}(): the element arguments must have the same length; got "
                + ", ".join(f"{k!r} with {v}" for k, v in k_lengths.items())
            )
        k = next(iter(k_lengths.values()))
        bad = {p: m for p, m in flat.items() if (k == 0 and m) or (k and m % k)}
        if bad:
            raise ValueError(
                f"{info.name}(): element arguments "
                + ", ".join(f"{p!r} ({m})" for p, m in k_lengths.items())
                + f" make {k} calls, so each batch argument's length must be a multiple of "
                f"{k} (cut into {k} equal batches); got "
                + ", ".join(f"{p!r} with {m}" for p, m in flat.items())
            )
    else:
        if len(set(flat.values())) > 1:
            raise ValueError(
                f"{info.name}(): the batch arguments are cut into the same batches, so they "
                f"must have the same length; got "
                + ", ".join(f"{p!r} with {m}" for p, m in flat.items())
            )
        total = next(iter(flat.values()))
        k = 0 if total == 0 else min(total, batches if batches is not None else workers())
    for i in batch_idx:
        total_i, cut = slicers[i]
        columns[i] = [cut(a, b) for a, b in cut_bounds(total_i, k)] if k else []
    plan = Plan(bound_fn, info.name, names, columns, k, batch_idx, flatten=flatten)
    plan.total_units = next(iter(flat.values()))
    return plan
