"""Every script in examples/ runs as a user would run it, exits 0 and prints what it should.

Each script is run in a fresh interpreter from a temporary working directory, without any
inherited ``JUST_DISTRIBUTE_*`` variable but ``JUST_DISTRIBUTE_ADDRESS``, set to the session's
function service so that cluster examples do not each start an embedded cluster.
``EXPECTED`` holds, per script, lines its output must contain; a script without an entry
fails the test, so no example goes unchecked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_docs import clean_env, noise

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 90  # seconds per script; each takes a few on an idle 2-core machine

#: Per script, regular expressions that must each match a line of its standard output.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        r"^compute: 20000 calls, longest chain 278 steps",
        r"^batches: \d+ batch sums adding up to 4999950000$",
        r"^quickstart ok$",
    ],
    "numpy_pandas.py": [
        r"^numpy: normalised 50000 rows of 16",
        r"^numpy sort +serial \S+s  io \d+\.\d\dx  compute \d+\.\d\dx$",
        r"^pandas columns +serial \S+s  io \d+\.\d\dx  compute \d+\.\d\dx$",
        r"^pure Python +serial \S+s  io \d+\.\d\dx  compute \d+\.\d\dx$",
        r"^numpy_pandas ok$",
    ],
    "files_io.py": [
        r"^saved 500 files, 2,048,000 bytes$",
        r"^fingerprinted 500 files, 251 distinct contents$",
        r"^files_io ok$",
    ],
    "web_api.py": [r"^web: 1000 requests of 20 ms", r"^retries: 100 flaky", r"^web_api ok$"],
    "errors_and_retries.py": [
        r"^raised: +ZeroDivisionError; just_distribute: raised by call 2: inverse\(x=0\)$",
        r"^returned: +\[1\.0, ZeroDivisionError\('division by zero'\), 0\.25\]$",
        r"^retried: +10 calls, 20 attempts$",
        r"^timed out: .*call 1",
        r"^lost: +exit code 3$",
        r"^errors_and_retries ok$",
    ],
    "training_curves.py": [
        r"^followed 100 losses live from 4 fits$",
        r"^learning rate 0\.3: final loss 0\.0\d+$",
        r"^best learning rate 0\.3, curves drawn to training_curves\.png$",
        r"^training_curves ok$",
    ],
    "progress_report.py": [
        r"^progress moved \d+ times, up to 400$",
        r"^fetch on job='io' with 4 workers: 400 calls",
        r"^progress_report ok$",
    ],
    "cluster_embedded.py": [
        r"^cluster: 2000 calls",
        r"^compute_this: simulated for 0\.5 s$",
        r"^cluster_embedded ok$",
    ],
    "pool_drop_in.py": [r"^compute: map, starmap", r"^io: the same API", r"^pool_drop_in ok$"],
    "checkpoint_resume.py": [
        r"^first run: killed with SIGKILL",
        r"^second run: 200 correct results, only \d+ calls ran again$",
        r"^checkpoint_resume ok$",
    ],
}


@pytest.fixture(scope="module")
def examples_env(cluster_service: Any) -> dict[str, str]:
    """A clean environment with the session's function service as the cluster."""
    return clean_env({"JUST_DISTRIBUTE_ADDRESS": str(cluster_service.address)})


def test_every_example_has_expectations() -> None:
    names = {p.name for p in EXAMPLES}
    assert names, "examples/ holds no script"
    assert names == set(EXPECTED), (
        f"scripts without expectations: {sorted(names - set(EXPECTED))}; "
        f"expectations without a script: {sorted(set(EXPECTED) - names)}"
    )


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path, examples_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=examples_env, capture_output=True,
        text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-5000:]}"
    )
    assert not noise(proc.stderr), f"{script.name} is noisy:\n{proc.stderr[-5000:]}"
    lines = proc.stdout.splitlines()
    for pattern in EXPECTED[script.name]:
        assert any(re.search(pattern, line) for line in lines), (
            f"{script.name}: no line of its output matches {pattern!r}\n{proc.stdout}"
        )
