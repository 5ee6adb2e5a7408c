"""S7 and S8: the cost of a call on a warm and on a cold pool; memory while streaming."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from just_distribute import distribute

from . import workloads
from .harness import Config, Row, Scenario, measure

ROOT = str(Path(__file__).resolve().parents[1])
OURS_COMPUTE = "just_distribute, compute"
OURS_IO = "just_distribute, io"
MS = 1000.0


def s7_warm(cfg: Config) -> Scenario:
    """S7: a call on 8 elements when the pool is already running."""
    data = list(range(8))
    expected = [x * x for x in data]
    cases: dict[str, Callable[[], Any]] = {}
    compute = distribute(job="compute", workers=2)(workloads.square)
    io = distribute(job="io")(workloads.square)
    cases[OURS_COMPUTE] = lambda: compute(data)
    cases[OURS_IO] = lambda: io(data)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(2))
        cases["multiprocessing.Pool.map"] = lambda: pool.map(workloads.square, data)
        with contextlib.suppress(ImportError):
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=2)
            cases["joblib.Parallel (loky)"] = lambda: par(
                delayed(workloads.square)(x) for x in data
            )
        with contextlib.suppress(ImportError):
            from mpire import WorkerPool  # type: ignore[attr-defined]

            mp_pool = stack.enter_context(WorkerPool(n_jobs=2, keep_alive=True))
            cases["mpire.WorkerPool.map (keep_alive)"] = lambda: mp_pool.map(
                workloads.square, data
            )
        tpe = stack.enter_context(ThreadPoolExecutor(6))
        cases["ThreadPoolExecutor.map"] = lambda: list(tpe.map(workloads.square, data))
        # Milliseconds are noisy: many counted rounds, the median says what a call costs.
        rows = measure(
            cases, max(cfg.runs, cfg.runs * 10), check=lambda r: list(r) == expected,
            ours=(OURS_COMPUTE, OURS_IO),
        )
    for row in rows:
        row.values = [v * MS for v in row.values]
        row.unit = "ms"
    sc = Scenario(
        "S7", "a warm call", "the second call of a function on 8 elements (the pool running)",
        rows, reference="budget", reference_value=5.0, ratio_label="x 5 ms",
        target="≤ 5 ms on compute and io",
    )
    c, i = sc.row(OURS_COMPUTE), sc.row(OURS_IO)
    if c.values and i.values:
        sc.met = c.median <= 5.0 and i.median <= 5.0
        sc.verdict = f"compute {c.median:.2f} ms, io {i.median:.2f} ms"
    return sc


FORK = "multiprocessing.Pool.map (fork)"
NO_PYC = "just_distribute, compute, no .pyc files"
_COLD = {
    OURS_COMPUTE: (
        "from just_distribute import distribute\n"
        "f = distribute(job='compute', workers=2)(square)",
        "out = f(data)",
        "",
    ),
    OURS_IO: (
        "from just_distribute import distribute\nf = distribute(job='io')(square)",
        "out = f(data)",
        "",
    ),
    FORK: (
        "import multiprocessing\nctx = multiprocessing.get_context('fork')",
        "pool = ctx.Pool(2)\nout = pool.map(square, data)",
        "pool.terminate()\npool.join()",
    ),
    "multiprocessing.Pool.map (spawn)": (
        "import multiprocessing\nctx = multiprocessing.get_context('spawn')",
        "pool = ctx.Pool(2)\nout = pool.map(square, data)",
        "pool.terminate()\npool.join()",
    ),
    "loky.get_reusable_executor().map": (
        "from loky import get_reusable_executor",
        "ex = get_reusable_executor(max_workers=2)\nout = list(ex.map(square, data))",
        "ex.shutdown(wait=True)",
    ),
    "joblib.Parallel (loky)": (
        "from joblib import Parallel, delayed\n"
        "from joblib.externals.loky import get_reusable_executor",
        "out = Parallel(n_jobs=2)(delayed(square)(x) for x in data)",
        "get_reusable_executor().shutdown(wait=True)",
    ),
    "mpire.WorkerPool.map": (
        "from mpire import WorkerPool",
        "pool = WorkerPool(n_jobs=2)\nout = pool.map(square, data)",
        "pool.terminate()",
    ),
    "ThreadPoolExecutor.map": (
        "from concurrent.futures import ThreadPoolExecutor",
        "pool = ThreadPoolExecutor(6)\nout = list(pool.map(square, data))",
        "pool.shutdown()",
    ),
}


def _cold_once(setup: str, call: str, teardown: str, where: str | None = None) -> float:
    """Seconds of the first call in a fresh interpreter (after its imports), run in
    ``where`` (default: this checkout)."""
    code = "\n".join([
        "import os, sys, time",
        "from benchmarks.workloads import square",
        "data = list(range(8))",
        setup,
        "t = time.perf_counter()",
        call,
        "elapsed = time.perf_counter() - t",
        "assert list(out) == [x * x for x in data]",
        "print(elapsed, flush=True)",
        teardown,  # not timed: the pool's shutdown
    ])
    # Output goes to a file, not a pipe: a pool's leftover process holding a pipe open
    # would keep a reader waiting.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=where or ROOT, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL,
            # (a copy elsewhere stays without .pyc files: it must compile every time)
            env=None if where is None else {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        try:
            code_ = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if code_ != 0 or not text.strip():
        raise RuntimeError(errors.strip().splitlines()[-1] if errors.strip() else "failed")
    return float(text.split()[0])


def _compiled() -> None:
    """Write the package's (and these benchmarks') ``.pyc`` files, as installing a wheel
    does: a checkout's editable install has none under ``PYTHONDONTWRITEBYTECODE``, and
    every fresh interpreter would compile each module it loads again."""
    import compileall

    for folder in ("just_distribute", "benchmarks"):
        compileall.compile_dir(str(Path(ROOT, folder)), quiet=1)


def s7_cold(cfg: Config) -> Scenario:
    """S7: the first call of a function in a fresh interpreter: the pool starts."""
    _compiled()
    # The same call from a copy of the checkout without .pyc files (the caller and its
    # workers load the package from the working directory, first on their path): what a
    # cold start costs when every process compiles the package's modules it loads.
    bare = tempfile.mkdtemp(prefix="jd-no-pyc-")
    for folder in ("just_distribute", "benchmarks"):
        shutil.copytree(Path(ROOT, folder), Path(bare, folder),
                        ignore=shutil.ignore_patterns("__pycache__"))
    cases: list[tuple[str, tuple[str, str, str], str | None]] = [
        (name, spec, None) for name, spec in _COLD.items()
    ]
    cases.insert(1, (NO_PYC, _COLD[OURS_COMPUTE], bare))
    rows: list[Row] = []
    for name, (setup, call, teardown), where in cases:
        row = Row(name, unit="ms", ours=name.startswith("just_distribute"))
        try:
            if not cfg.smoke:
                _cold_once(setup, call, teardown, where)  # warm-up: the disk cache
            row.values = [
                _cold_once(setup, call, teardown, where) * MS for _ in range(cfg.runs)
            ]
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    shutil.rmtree(bare, ignore_errors=True)
    sc = Scenario(
        "S7c", "a cold call",
        "the first call of a function on 8 elements in a fresh interpreter (pool start "
        "included, imports excluded)",
        rows, reference=FORK, ratio_label="x fork Pool",
        target="compute ≤ 2x the fork-based multiprocessing.Pool (same run)",
    )
    c, fork = sc.row(OURS_COMPUTE), sc.row(FORK)
    if c.values and fork.values:
        ratio = c.median / fork.median
        sc.met = ratio <= 2.0
        sc.verdict = (
            f"compute {c.median:.0f} ms = {ratio:.1f}x fork's {fork.median:.0f} ms; "
            f"io {sc.row(OURS_IO).median:.1f} ms"
        )
    sc.notes.append(
        "The compute job's workers are fresh interpreters (started with subprocess, like "
        "loky's and spawn's, not forked like multiprocessing's default and mpire's: no locks "
        "or threads inherited, the caller's `__main__` never re-imported, a stuck worker can "
        "be killed alone), all started at once; a chunk taken by a worker still starting is "
        "sent by the first one up. A worker runs Python with its `site` (the installed "
        "packages' `.pth` files: an editable install's finder is most of it), then loads "
        "four modules of the package (the package `__init__`s, configuration, registry, "
        "error classes and the caller's side of updates are not run there) and the light "
        "standard library they use (pickle, socket, threading, typing; not logging, "
        "dataclasses, inspect or traceback). A fork copies a running interpreter instead: "
        "no start-up at all, which a fresh interpreter cannot match; the pool then stays up "
        "for every later call (S7)."
    )
    sc.notes.append(
        f"The package's `.pyc` files are written first, as installing a wheel does (this "
        f"checkout is an editable install; with `PYTHONDONTWRITEBYTECODE` set it would have "
        f"none). The row '{NO_PYC}' is the same call when every process compiles the "
        f"modules it loads: the caller the executor's, each worker its four."
    )
    return sc


_STREAM = textwrap.dedent("""
    import gc, json, os, resource, sys, threading, time
    from benchmarks.workloads import square
    N = int(sys.argv[1])
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE

    KIND = sys.argv[2]
    if KIND == "ours":
        from just_distribute import distribute
        f = distribute(job="compute", workers=2)(square)
        f(list(range(1000)))
        run = lambda: f.iter(x for x in range(N))
    else:
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(2)
        pool.map(square, range(1000))
        run = lambda: pool.imap(square, (x for x in range(N)), chunksize=10_000)
    gc.collect()
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss())

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    total = 0
    for v in run():
        total += v
    elapsed = time.perf_counter() - t
    stop.set()
    peak[0] = max(peak[0], rss())
    assert total == sum(x * x for x in range(N))
    print(json.dumps({"growth": (peak[0] - base) / 2**20, "seconds": elapsed}), flush=True)
    os._exit(0)
""")


def _stream_once(kind: str, n: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _STREAM, str(n), kind], cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    out: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return out


def s8(cfg: Config) -> Scenario:
    """S8: 2,000,000 elements from a generator through ``f.iter``: parent memory."""
    n = cfg.size(2_000_000, 50_000)
    runs = 1 if cfg.smoke else 3  # each run is a fresh interpreter streaming everything
    rows: list[Row] = []
    for kind, name in (("ours", "just_distribute f.iter, compute"),
                       ("pool", "multiprocessing.Pool.imap(chunksize=10000)")):
        row = Row(name, unit="MB", ours=kind == "ours")
        try:
            outs = [_stream_once(kind, n) for _ in range(runs)]
            row.values = [o["growth"] for o in outs]
            secs = sorted(o["seconds"] for o in outs)
            row.note = f"{secs[len(secs) // 2]:.2f} s to stream"
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    sc = Scenario(
        "S8", "streaming memory",
        f"{n:,} elements from a generator through `f.iter`, compute, 2 workers: growth of "
        f"the caller's resident memory at its peak (sampled every 5 ms; fresh interpreter "
        f"per run, {runs} runs)",
        rows, reference="budget", reference_value=150.0, ratio_label="x 150 MB",
        target="parent peak RSS growth ≤ 150 MB",
    )
    ours = rows[0]
    if ours.values:
        sc.met = ours.high <= 150.0
        sc.verdict = f"{ours.high:.1f} MB at most ({ours.note})"
    return sc
