"""A progress callback and the run report: how a run's calls were spread over the workers.

Run: python examples/progress_report.py
"""

from __future__ import annotations

import time

from just_distribute import distribute


@distribute(job="io", workers=4)
def fetch(i: int) -> int:
    time.sleep(0.005)
    return i


def main() -> None:
    seen: list[int] = []
    results, report = fetch.with_options(
        progress=lambda done, total: seen.append(done)
    ).report(range(400))
    assert results == list(range(400)) and seen[-1] == 400
    print(f"progress moved {len(seen)} times, up to {seen[-1]}")
    print(report.table())
    assert sum(w.calls for w in report.per_worker.values()) == report.calls == 400
    print("progress_report ok")


if __name__ == "__main__":
    main()
