"""The release check: the wheel and the sdist in ``dist/`` are what a user can install.

Run by ``make release-check`` (a part of ``make test``) after ``make dist`` has built both with
``python -m build``. It fails, naming what is wrong, when:

- ``dist/`` does not hold exactly one sdist and one wheel of the version in
  ``just_distribute/_version.py``;
- the wheel lacks a module of the source tree, ``py.typed`` or the ``just-distribute`` entry
  point, or carries files that are not the package (tests, benchmarks, ...); the sdist lacks
  what a build from it needs, or what its test suite needs (every file of tests/, docs/,
  examples/, benchmarks/; LICENSE, mkdocs.yml), or pytest, run in the unpacked sdist, fails
  to collect the suite there;
- ``twine check --strict`` finds a problem in their metadata;
- in a fresh virtual environment in a temporary directory outside the source tree, with the
  wheel and its core dependencies only, the package is not imported from that environment,
  ``__version__`` differs from the installed metadata, ``examples/quickstart.py`` (copied
  there) fails, ``just-distribute --version`` prints something else, or
  ``just-distribute demo --quick`` fails; then again with the web extra, whose workload the
  demo then runs.

Usage: python tools/release_check.py [DIST_DIR]   (default: dist)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "just_distribute"
ENTRY_POINT = "just-distribute = just_distribute.cli:main"


class CheckFailed(Exception):
    """One check of the release failed; the message says which and why."""


def step(name: str) -> float:
    print(f"release check: {name}", flush=True)
    return time.perf_counter()


def done(started: float) -> None:
    print(f"release check:   ok ({time.perf_counter() - started:.1f} s)", flush=True)


def source_version() -> str:
    text = (PACKAGE / "_version.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not found:
        raise CheckFailed("just_distribute/_version.py has no __version__ line")
    return found.group(1)


def the_artifacts(dist: Path, version: str) -> tuple[Path, Path]:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise CheckFailed(
            f"{dist} must hold one wheel and one sdist (run make dist), has "
            f"{[p.name for p in wheels + sdists]}"
        )
    wheel, sdist = wheels[0], sdists[0]
    if wheel.name != f"just_distribute-{version}-py3-none-any.whl":
        raise CheckFailed(f"the wheel {wheel.name} is not version {version}, pure Python")
    if sdist.name != f"just_distribute-{version}.tar.gz":
        raise CheckFailed(f"the sdist {sdist.name} is not version {version}")
    return wheel, sdist


def package_files() -> set[str]:
    """The files of the package in the source tree, as paths inside a wheel."""
    files = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    files.add("just_distribute/py.typed")
    return {f for f in files if "__pycache__" not in f}


def check_wheel(wheel: Path, version: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"just_distribute-{version}.dist-info"
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    missing = sorted(package_files() - set(names))
    if missing:
        raise CheckFailed(f"the wheel lacks {missing}")
    stray = sorted(n for n in names if not n.startswith(("just_distribute/", f"{info}/")))
    if stray:
        raise CheckFailed(f"the wheel carries files outside the package: {stray}")
    if "[console_scripts]" not in entry_points or ENTRY_POINT not in entry_points:
        raise CheckFailed(f"the wheel's entry points lack {ENTRY_POINT!r}:\n{entry_points}")
    if f"\nVersion: {version}\n" not in metadata:
        raise CheckFailed(f"the wheel's METADATA is not version {version}")
    return names


#: What the test suite reads or runs besides the package: an sdist carries all of it.
SUITE_FOLDERS = ("tests", "docs", "examples", "benchmarks")
SUITE_FILES = ("pyproject.toml", "README.md", "LICENSE", "mkdocs.yml")


def suite_files() -> set[str]:
    """The files the test suite needs in the source tree (helpers, fault scripts, pages)."""
    files = set(SUITE_FILES)
    for folder in SUITE_FOLDERS:
        files |= {
            p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        }
    return files


def check_sdist(sdist: Path, version: str) -> None:
    top = f"just_distribute-{version}"
    with tarfile.open(sdist) as tf:
        names = {n.removeprefix(f"{top}/") for n in tf.getnames()}
    needed = {"PKG-INFO"} | package_files() | suite_files()
    missing = sorted(needed - names)
    if missing:
        raise CheckFailed(f"the sdist lacks {missing} (see MANIFEST.in)")


def collected(where: Path) -> list[str]:
    """The test ids that pytest collects in ``where``, with the package imported from there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUST_DISTRIBUTE_")}
    env["PYTHONPATH"] = str(where)
    probe = "import just_distribute, sys; print(just_distribute.__file__)"
    found = Path(run([sys.executable, "-c", probe], where, env, timeout=60).strip())
    if not found.resolve().is_relative_to(where.resolve()):
        raise CheckFailed(f"in {where}, just_distribute is imported from {found}")
    out = run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        where, env, timeout=300,
    )
    return [line for line in out.splitlines() if "::" in line]


def check_sdist_suite(sdist: Path, version: str) -> int:
    """pytest collects the suite in the unpacked sdist without an error (every helper module
    and fixture is there; the files themselves are checked by :func:`check_sdist`), every
    test module of the tree among it; returns the number of tests."""
    with tempfile.TemporaryDirectory(prefix="just-distribute-sdist-") as tmp:
        with tarfile.open(sdist) as tf:
            tf.extractall(tmp, filter="data")
        ids = collected(Path(tmp) / f"just_distribute-{version}")
    modules = {i.split("::", 1)[0] for i in ids}
    lost = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py")
                  if p.relative_to(ROOT).as_posix() not in modules)
    if lost:
        raise CheckFailed(f"from the unpacked sdist pytest collects no test of {lost}")
    return len(ids)


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``argv``; return its standard output, or fail with both streams."""
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise CheckFailed(
            f"{' '.join(map(str, argv))} exited with {proc.returncode} in {cwd}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def outside_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points back into the source tree."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("JUST_DISTRIBUTE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def demo(bin_dir: Path, work: Path, env: dict[str, str], *, web: bool) -> None:
    """``just-distribute demo --quick``: every row the same results as serial; the cluster
    workload skipped for want of dask, the web one unless ``web``."""
    out = run(
        [bin_dir / "just-distribute", "demo", "--quick", "--no-progress"], work, env,
        timeout=300,
    )
    rows = {}  # (workload, job) -> "yes" when the distributed run gave the serial results
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] in {"cpu", "io", "web"}:
            rows[(parts[0], parts[3])] = parts[7]
    expected = {("cpu", "compute"), ("io", "io")} | ({("web", "web")} if web else set())
    if set(rows) != expected or set(rows.values()) != {"yes"}:
        raise CheckFailed(f"the demo did not run {sorted(expected)} correctly:\n{out}")
    skips = ["cluster: not run (job='cluster' needs the optional package 'distributed'"]
    if not web:
        skips.append("web: not run (aiohttp is not installed")
    for skip in skips:
        if skip not in out:
            raise CheckFailed(f"the demo's output lacks {skip!r}...:\n{out}")


def check_installed(wheel: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="just-distribute-release-") as tmp:
        work = Path(tmp).resolve()
        if work.is_relative_to(ROOT):
            raise CheckFailed(f"the temporary directory {work} is inside the source tree")
        env = outside_env()
        started = step(f"a fresh virtual environment in {work}, the wheel, core dependencies")
        venv.create(work / "venv", with_pip=True, clear=True)
        bin_dir = work / "venv" / "bin"
        pip: list[str | Path] = [bin_dir / "python", "-m", "pip", "install", "--quiet"]
        run([*pip, wheel], work, env, timeout=600)
        done(started)

        started = step("imported from the environment, __version__ == metadata, py.typed")
        probe = (
            "import importlib.metadata, importlib.resources, pathlib, sys\n"
            "import just_distribute\n"
            "where = pathlib.Path(just_distribute.__file__).resolve()\n"
            "assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), where\n"
            "meta = importlib.metadata.version('just-distribute')\n"
            "assert just_distribute.__version__ == meta, (just_distribute.__version__, meta)\n"
            "assert importlib.resources.files('just_distribute').joinpath('py.typed').is_file()\n"
            "print(just_distribute.__version__)\n"
        )
        got = run([bin_dir / "python", "-c", probe], work, env, timeout=60).strip()
        if got != version:
            raise CheckFailed(f"the installed package says {got!r}, not {version!r}")
        done(started)

        started = step("just-distribute --version")
        got = run([bin_dir / "just-distribute", "--version"], work, env, timeout=60).strip()
        if got != f"just-distribute {version}":
            raise CheckFailed(f"just-distribute --version printed {got!r}")
        done(started)

        started = step("examples/quickstart.py, copied outside the tree")
        shutil.copy(ROOT / "examples" / "quickstart.py", work / "quickstart.py")
        out = run([bin_dir / "python", "quickstart.py"], work, env, timeout=300)
        if "quickstart ok" not in out:
            raise CheckFailed(f"the quickstart did not finish:\n{out}")
        done(started)

        started = step("just-distribute demo --quick (core only: the cluster and web skipped)")
        demo(bin_dir, work, env, web=False)
        done(started)

        started = step("the web extra added: just-distribute demo --quick runs the web workload")
        run([*pip, f"{wheel}[web]"], work, env, timeout=600)
        demo(bin_dir, work, env, web=True)
        done(started)


def main(argv: list[str]) -> int:
    dist = (ROOT / (argv[0] if argv else "dist")).resolve()
    began = time.perf_counter()
    try:
        version = source_version()
        wheel, sdist = the_artifacts(dist, version)

        started = step(f"the contents of {wheel.name} and {sdist.name}")
        names = check_wheel(wheel, version)
        check_sdist(sdist, version)
        size = wheel.stat().st_size
        print(f"release check:   {wheel.name}: {size:,} bytes, {len(names)} files")
        for name in names:
            print(f"release check:     {name}")
        done(started)

        started = step(f"the test suite collects from the unpacked {sdist.name}")
        print(f"release check:   {check_sdist_suite(sdist, version)} tests collected")
        done(started)

        started = step("twine check --strict")
        run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], ROOT,
            dict(os.environ), timeout=120)
        done(started)

        check_installed(wheel, version)
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"release check: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"release check: passed in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
