"""Nested calls between functions defined in ``__main__`` (sent to workers by value)."""

from __future__ import annotations

import json

from just_distribute import distribute


@distribute(job="compute", workers=2)
def inner(x: int) -> int:
    return x * 10


@distribute(job="io", workers=2)
def inner_io(x: int) -> int:
    return x + 100


@distribute(job="compute", workers=2)
def outer(x: int) -> list[int]:
    return inner(range(x)) + inner_io(range(x))


@distribute(job="compute", workers=2)
def factorial(n: int) -> int:
    return 1 if n <= 1 else n * factorial([n - 1])[0]


if __name__ == "__main__":
    print(json.dumps({"outer": outer([1, 2, 3]), "factorial": factorial([5, 6])}))
