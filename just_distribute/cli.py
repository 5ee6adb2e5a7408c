"""The ``just-distribute`` command: demo, the function service, workers, the load test.

Each subcommand lives in its own module, which provides ``configure(parser)`` to declare
its arguments and ``main(args) -> int`` to run; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]

_COMMANDS = {
    "demo": ("just_distribute.demo", "run the demo: every job, serial against distributed"),
    "cluster": (
        "just_distribute.service.serve",
        "start the function service: a dask scheduler and N one-at-a-time workers",
    ),
    "worker": ("just_distribute.service.worker", "join workers to a running function service"),
    "loadtest": ("just_distribute.loadtest.command", "measure the function service's throughput"),
    "tls": ("just_distribute.service.identities",
            "TLS identities per role: a CA that stays home, one certificate per host/client"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="just-distribute",
        description="Make an ordinary Python function parallel with one decorator.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument(
        "--version",
        action="version",
        version=f"just-distribute {__version__}",
        help="print the version and exit",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of a failure (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Also after the command; SUPPRESS keeps the subparser from resetting it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of a failure (default: one line)")
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_module=module)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    mod = importlib.import_module(args._module)
    try:
        return int(mod.main(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line naming the cause; the traceback with --debug
        if args.debug:
            raise
        print(f"just-distribute {args.command}: {_one_line(exc)} (--debug shows the "
              f"traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
