"""Packaging: typed, a console script, and the extras of the design guide."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\s]", r, maxsplit=1)[0].lower() for r in requirements}


def test_py_typed_is_in_the_package(pyproject: dict[str, Any]) -> None:
    assert importlib.resources.files("just_distribute").joinpath("py.typed").is_file()
    assert (ROOT / "just_distribute" / "py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["just_distribute"]


def test_console_script(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["scripts"]["just-distribute"] == "just_distribute.cli:main"
    points = importlib.metadata.entry_points(group="console_scripts", name="just-distribute")
    (point,) = points
    assert point.value == "just_distribute.cli:main"
    assert callable(point.load())
    assert (Path(sys.executable).parent / "just-distribute").exists()


def test_build_system_and_python(pyproject: dict[str, Any]) -> None:
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert pyproject["project"]["name"] == "just-distribute"


def test_dependencies_and_extras_as_in_the_design(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    # pathos is no core dependency: the compute job runs its own worker processes (see
    # executors/processes.py); pathos is only a peer in the benchmark.
    assert {"dill", "typing-extensions", "tqdm"} <= _names(project["dependencies"])
    assert "pathos" not in _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert {"joblib", "mpire", "pathos"} <= _names(extras["bench"])
    assert {"dask[distributed]", "bokeh"} <= _names(extras["cluster"])
    assert "aiohttp" in _names(extras["web"])
    assert "matplotlib" in _names(extras["loadtest"])
    assert any(
        "just-distribute[" in r and {"cluster", "web", "loadtest"} <= set(
            r.split("[", 1)[1].rstrip("]").split(",")
        )
        for r in extras["all"]
    )
    assert {"pytest", "hypothesis", "pytest-timeout"} <= _names(extras["test"])
    assert {"mkdocs-material", "mkdocstrings[python]"} <= _names(extras["docs"])
    assert {"ruff", "mypy"} <= _names(extras["lint"])


def _installed_from_this_tree() -> bool:
    """Whether the installed distribution was built from this checkout (not another one)."""
    dist = importlib.metadata.distribution("just-distribute")
    direct = dist.read_text("direct_url.json")
    if direct is None:  # a wheel install: its files are where just_distribute is imported from
        import just_distribute

        return Path(str(dist.locate_file("just_distribute"))) == Path(
            just_distribute.__file__
        ).parent
    url = json.loads(direct).get("url", "")
    return url.startswith("file://") and Path(url[len("file://"):]).resolve() == ROOT


def test_installed_metadata_matches() -> None:
    meta = importlib.metadata.metadata("just-distribute")
    assert set(meta.get_all("Provides-Extra") or []) >= {"cluster", "web", "loadtest", "all"}


def test_one_source_of_truth_for_the_version(pyproject: dict[str, Any]) -> None:
    """pyproject reads the version from just_distribute/_version.py; nothing else writes it."""
    project = pyproject["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "just_distribute._version.__version__"
    import just_distribute
    from just_distribute import _version

    assert just_distribute.__version__ == _version.__version__
    source = (ROOT / "just_distribute" / "_version.py").read_text(encoding="utf-8")
    assert f'__version__ = "{_version.__version__}"' in source
    init = (ROOT / "just_distribute" / "__init__.py").read_text(encoding="utf-8")
    assert "from just_distribute._version import __version__" in init
    assert not re.search(r"^__version__\s*=", init, re.M)


def test_the_version_sorts_after_the_earlier_line() -> None:
    """The registry's ``just-distribute`` 0.1.x is an earlier, Ray-based library."""
    import just_distribute

    found = re.match(r"(\d+)\.(\d+)\.(\d+)", just_distribute.__version__)
    assert found, just_distribute.__version__
    assert tuple(int(p) for p in found.groups()) >= (0, 2, 0)


def test_version_is_the_installed_metadata_version() -> None:
    if not _installed_from_this_tree():
        pytest.skip("the installed just-distribute was built from another checkout")
    import just_distribute

    assert just_distribute.__version__ == importlib.metadata.version("just-distribute")
