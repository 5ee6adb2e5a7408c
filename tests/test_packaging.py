"""Packaging: typed, a console script, and the extras of the design guide."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
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


def test_installed_metadata_matches(pyproject: dict[str, Any]) -> None:
    meta = importlib.metadata.metadata("just-distribute")
    assert set(meta.get_all("Provides-Extra") or []) >= {"cluster", "web", "loadtest", "all"}
    import just_distribute

    assert just_distribute.__version__ == pyproject["project"]["version"]
