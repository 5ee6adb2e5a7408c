"""Raise exceptions of classes defined in this script's ``__main__``; report what was caught.

Usage: python main_exceptions.py JOB [ADDRESS]

Prints one JSON line: for each kind of exception, whether ``except TheClass:`` caught it
and the attributes it came back with.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from just_distribute import distribute


class CodeError(Exception):
    """An exception of the script: ``except CodeError`` must catch it."""


class TwoArgError(Exception):
    """Its ``__init__`` takes other arguments than it passes to Exception."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def fail(x: int) -> int:
    if x == 3:
        raise CodeError("bad input", x)
    if x == 5:
        raise TwoArgError(7, "boom")
    return x


def main() -> None:
    job = sys.argv[1]
    where: dict[str, Any] = {"workers": 2}
    if len(sys.argv) > 2:
        where = {"address": sys.argv[2]}
    f = distribute(fail, job=job, chunksize=2, **where)
    seen: dict[str, Any] = {}
    try:
        f([3])
    except CodeError as exc:
        seen["code"] = {"caught": True, "args": list(exc.args)}
    except Exception as exc:
        seen["code"] = {"caught": False, "type": repr(type(exc)), "text": str(exc)}
    try:
        f([1, 5])
    except TwoArgError as exc:
        seen["two"] = {"caught": True, "code": exc.code, "msg": exc.msg, "text": str(exc)}
    except Exception as exc:
        seen["two"] = {"caught": False, "type": repr(type(exc)), "text": str(exc)}
    out = f.with_options(on_error="return")(range(6))
    seen["returned"] = [type(v).__name__ if isinstance(v, Exception) else v for v in out]
    seen["returned_is_class"] = isinstance(out[3], CodeError) and isinstance(out[5], TwoArgError)
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
