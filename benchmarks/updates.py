"""The cost of ``just_distribute.update()``: ``python -m benchmarks.updates [--smoke]``.

Measures, per job (compute, io, cluster on a local function service):

- *cost*: what one ``update(step=i, loss=x)`` costs the call that makes it, median over
  repeats: a call times a tight loop of updates against the same loop without them (the
  loop runs inside the worker, so the round trip to the caller does not count);
- *rate*: the highest steady rate (updates per second, one call) that reaches the caller
  with nothing coalesced (``report.updates_dropped == 0``), from a ladder of rates;
- *outside*: the cost of ``update()`` outside any run (it does nothing).

Not a peer comparison (no other library has this), so it is not one of the S scenarios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit

from just_distribute import distribute, update

RATES = [1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 50_000, 100_000, 200_000]


def loop_cost(n: int, publish: bool) -> float:
    """Seconds for ``n`` iterations of a loop that publishes (or not) one update each."""
    t0 = time.perf_counter()
    if publish:
        for i in range(n):
            update(step=i, loss=1.0 / (i + 1))
    else:
        for i in range(n):
            _ = {"step": i, "loss": 1.0 / (i + 1)}  # the same work but the publishing
    return time.perf_counter() - t0


def paced(rate: int, seconds: float) -> tuple[int, float]:
    """Publish ``rate`` updates per second for ``seconds`` (busy pacing); return the count
    and the rate achieved (a loaded machine may not keep up)."""
    n = int(rate * seconds)
    gap = 1.0 / rate
    start = time.perf_counter()
    for i in range(n):
        target = start + i * gap
        while time.perf_counter() < target:
            pass
        update(step=i)
    return n, n / (time.perf_counter() - start)


def cost_per_update(f_cost: object, n: int, repeats: int) -> float:
    """Median over ``repeats`` of (loop with updates - loop without) / n, in microseconds."""
    samples = []
    for _ in range(repeats):
        with_updates, without = f_cost([n, n], [True, False])  # type: ignore[operator]
        samples.append((with_updates - without) / n * 1e6)
    return statistics.median(samples)


def highest_clean_rate(f_paced: object, seconds: float) -> float:
    """The highest rate achieved, up the ladder, with nothing coalesced (0: not 1,000/s)."""
    best = 0.0
    for rate in RATES:
        ((sent, achieved),), report = f_paced.report([rate], seconds=seconds)  # type: ignore[attr-defined]
        got = sum(len(v) for v in report.updates.values())
        if report.updates_dropped or got != sent:
            break
        best = max(best, achieved)
    return best


def main(argv: list[str] | None = None) -> int:
    """Measure and print a table; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.updates", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--jobs", default="compute,io,cluster")
    args = parser.parse_args(argv)
    n, repeats, seconds = (2_000, 3, 0.2) if args.smoke else (20_000, 9, 2.0)

    def nothing(message: str | None = None, /, **values: object) -> None:
        return None

    outside = min(timeit.repeat(lambda: update(step=1, loss=0.5), number=100_000, repeat=5))
    plain = min(timeit.repeat(lambda: nothing(step=1, loss=0.5), number=100_000, repeat=5))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"update() outside a run: {outside / 100_000 * 1e9:.0f} ns "
          f"(an empty function with the same arguments: {plain / 100_000 * 1e9:.0f} ns)")

    service = None
    try:
        print(f"{'job':<10} {'cost per update (median)':>26} {'clean rate, one call':>22}")
        for job in args.jobs.split(","):
            extra: dict[str, object] = {}
            if job == "cluster":
                from just_distribute.service import start_service

                service = service or start_service(2)
                extra["address"] = service.address
            f_cost = distribute(job=job, workers=2, chunksize=1, **extra)(loop_cost)  # type: ignore[call-overload]
            f_paced = distribute(job=job, workers=1, **extra)(paced)  # type: ignore[call-overload]
            f_cost([10, 10], [True, False])  # warm: workers started, functions loaded
            us = cost_per_update(f_cost, n, repeats)
            rate = highest_clean_rate(f_paced, seconds)
            shown = f"{rate:,.0f}/s"
            print(f"{job:<10} {us:>23.2f} us {shown:>22}")
    finally:
        if service is not None:
            from just_distribute.executors import shutdown_all

            shutdown_all()
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
