"""``just-distribute loadtest``: its arguments and its exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from just_distribute.errors import JustDistributeError, MissingExtraError
from just_distribute.loadtest.records import OUTPUTS, format_table
from just_distribute.loadtest.run import run_loadtest

__all__ = ["configure", "main"]

# -- command line -----------------------------------------------------------------------
def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 1,2,4; got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected counts of at least 1, such as 1,2,4; got {text!r}"
        )
    return values


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds such as 0.05; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 such as 0.05; got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the load test's command-line arguments on ``parser``."""
    parser.add_argument(
        "--workers", type=_counts, default=None, metavar="N,N,...",
        help="worker counts to start the service with, one run each (default 1,2,4; "
        "ignored with --address)",
    )
    parser.add_argument(
        "--tasks", type=_counts, default=[50, 200, 1000], metavar="N,N,...",
        help="task counts to submit for each worker count (default 50,200,1000)",
    )
    parser.add_argument(
        "--duration", type=_positive, default=0.05, metavar="SECONDS",
        help="seconds each task sleeps or computes (default 0.05)",
    )
    parser.add_argument(
        "--kind", choices=("sleep", "cpu"), default="sleep",
        help="sleep (waits, like I/O) or cpu (burns CPU) (default sleep)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest-out"), metavar="DIR",
        help="where to write results.csv, the plots and report.md (default ./loadtest-out)",
    )
    parser.add_argument(
        "--address", default=None, metavar="ADDRESS",
        help="measure a running function service (its scheduler address) instead of "
        "starting one",
    )
    parser.add_argument(
        "--connect-timeout", type=_positive, default=10.0, metavar="SECONDS",
        help="seconds to wait for the service to answer (default 10)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the load test described by the parsed ``args``; return the exit code."""
    try:
        summaries = run_loadtest(
            workers=args.workers, tasks=args.tasks, duration=args.duration, kind=args.kind,
            out=args.out, address=args.address, echo=print, progress=True,
            connect_timeout=args.connect_timeout,
        )
    except MissingExtraError as exc:
        print(f"just-distribute loadtest: {exc}", file=sys.stderr)
        return 2
    except (JustDistributeError, OSError, TimeoutError) as exc:
        # The service did not start, or the one at --address cannot be reached.
        hint = (
            f". Is a service running at --address {args.address}? Start one with "
            "`just-distribute cluster`, or leave out --address to start one per worker count."
            if args.address is not None and not isinstance(exc, JustDistributeError)
            else ""
        )
        print(f"just-distribute loadtest: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    print()
    print(format_table(summaries, markdown=False))
    print(f"\nwrote {args.out}/: {', '.join(OUTPUTS)}")
    return 0
