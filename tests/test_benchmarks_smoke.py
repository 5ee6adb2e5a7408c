"""The benchmark's report writer (the benchmark itself runs in ``make bench-smoke``).

Nothing here measures or asserts a speed: it checks that results become the page the docs
link to, with every row, the ratios and the verdicts.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ is a top-level package of the repository, not of the installed library.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Row, Scenario, measure
from benchmarks.report import write_markdown


def test_measure_interleaves_checks_and_keeps_errors() -> None:
    calls: list[str] = []

    def good() -> int:
        calls.append("good")
        return 1

    def wrong() -> int:
        calls.append("wrong")
        return 2

    rows = measure({"good": good, "wrong": wrong}, 3, check=lambda r: r == 1)
    by_name = {r.name: r for r in rows}
    assert len(by_name["good"].values) == 3
    assert by_name["wrong"].values == [] and "wrong result" in str(by_name["wrong"].error)
    # a warm-up each, then rounds in turn; the failed library leaves the rounds
    assert calls == ["good", "wrong", "good", "wrong", "good", "good"]


def test_report_has_every_row_ratio_and_verdict(tmp_path: Path) -> None:
    rows = [
        Row("serial", [0.10, 0.12, 0.11]),
        Row("ours", [0.15, 0.16, 0.30], ours=True),
        Row("peer", error="RuntimeError: broken"),
    ]
    sc = Scenario(
        "S1", "many tiny calls", "x*x on ints", rows, reference="serial",
        ratio_label="x serial", target="at most 2x serial", met=False,
        verdict="1.45x serial", notes=["What limits it: pickling."],
    )
    page = tmp_path / "performance.md"
    write_markdown(
        page, [sc], {"cores": "2"}, {"joblib": "1.0"}, image="img/performance.png",
        runs=3, seconds=12.0,
    )
    text = page.read_text()
    assert "| S1 | many tiny calls | at most 2x serial | 1.45x serial | **not met** |" in text
    assert "| **ours** | 0.160 s | 0.150 s - 0.300 s | 1.45x | 3 |" in text
    assert "| serial | 0.110 s | 0.100 s - 0.120 s | 1.00x | 3 |" in text
    assert "failed: RuntimeError: broken" in text
    assert "What limits it: pickling." in text
    assert "![" in text and "img/performance.png" in text
    assert "| joblib | 1.0 |" in text
