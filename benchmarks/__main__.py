"""``python -m benchmarks [--smoke] [--only S1,S3] [--runs N] [--out DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import arrays, compute, dask_cluster, scaling, startup, waiting
from .harness import Config, Scenario, machine, versions
from .report import plot, write_markdown

ROOT = Path(__file__).resolve().parents[1]

SCENARIOS: dict[str, Callable[[Config], Scenario]] = {
    "S1": compute.s1,
    "S2": compute.s2,
    "S3": waiting.s3,
    "S4": waiting.s4,
    "S5": dask_cluster.s5,
    "S6": dask_cluster.s6,
    "S7": startup.s7_warm,
    "S7c": startup.s7_cold,
    "S8": startup.s8,
    "S9": arrays.s9,
    "S10": scaling.s10,
}


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and write the report; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true",
        help="tiny sizes, one run, results in a temporary directory: proves the benchmark runs",
    )
    parser.add_argument("--runs", type=int, default=None, help="counted runs (default 5)")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. S1,S3")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="where performance.md and img/performance.png go (default: docs/)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = Config(smoke=args.smoke, runs=args.runs or (1 if args.smoke else 5))
    out = args.out or (Path(tempfile.mkdtemp(prefix="jd-bench-")) if args.smoke else ROOT / "docs")
    wanted = [k.strip() for k in args.only.split(",") if k.strip()] or list(SCENARIOS)
    unknown = [k for k in wanted if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    info = machine()
    started = time.monotonic()
    results: list[Scenario] = []
    failed = False
    for key in wanted:
        t = time.monotonic()
        print(f"{key} ...", end=" ", flush=True)
        try:
            sc = SCENARIOS[key](cfg)
        except Exception as exc:  # one broken scenario must not cost the others
            failed = True
            print(f"failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        sc.seconds = time.monotonic() - t
        results.append(sc)
        failed = failed or any(r.error is not None for r in sc.rows if r.ours)
        print(f"{sc.seconds:.1f} s; {sc.verdict or '-'}", flush=True)
        for row in sc.rows:
            status = row.error or f"median {row.median:.4g} {row.unit}"
            print(f"    {row.name}: {status}", flush=True)
    _shutdown()
    seconds = time.monotonic() - started
    import os

    if hasattr(os, "getloadavg"):
        info["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    image = out / "img" / "performance.png"
    drew = plot(image, results)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "performance.md"
    write_markdown(
        md, results, info, versions(), image="img/performance.png" if drew else None,
        runs=cfg.runs, seconds=seconds,
    )
    print(f"wrote {md}" + (f" and {image}" if drew else ""))
    return 1 if failed else 0


def _shutdown() -> None:
    """Stop our shared pools (and the embedded cluster) before writing, not at exit."""
    from just_distribute.executors import shutdown_all

    shutdown_all()


if __name__ == "__main__":
    sys.exit(main())
