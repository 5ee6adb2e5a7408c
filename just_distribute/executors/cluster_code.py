"""Code that travels to a dask cluster: by reference when the workers can import it, by value
when they cannot; shipping a local package; checking that both sides speak the same pickle.

Which modules go by value is decided here, in the caller, once per module::

    a function, class or module met while pickling
        |
        +-- standard library, built in, just_distribute itself  -> by reference
        +-- part of an installed distribution (site-packages,
        |   editable installs included: their .pth or finder)      -> by reference
        +-- anything else (a test file, tasks.py beside a script,
            a client/ package, __main__)                          -> by value (cloudpickle)

A worker that still cannot import a module (it is installed here, not there) answers with
its ``ModuleNotFoundError``; :func:`learn_missing` then marks that module by value, and the
chunk is sent once more. Both decisions are remembered for the life of the process.
:func:`ship_to` sends a local package or folder to every worker, present and future, for
code that must be importable there (a module-level ``import helpers``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import pickle
import site
import sys
import sysconfig
import tempfile
import threading
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from just_distribute.errors import JustDistributeError, VersionMismatchError

__all__ = [
    "by_value_modules", "dumps", "learn_missing", "local_versions", "ship_to",
    "travels_by_reference", "check_versions",
]

_lock = threading.Lock()
_decided: dict[str, bool] = {}  # top-level module name -> travels by reference
#: Bumped whenever a module changes side: bytes made before then are stale.
generation = 0
_ALWAYS_BY_REFERENCE = {"__main__": False, "just_distribute": True, "builtins": True}


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(str(Path(r).resolve()) + os.sep for r in roots if r)


@functools.cache
def _editable_roots() -> tuple[str, ...]:
    # An editable install puts its folder on the path through a .pth file in site-packages
    # (reading those few files costs microseconds, where importlib.metadata's full scan of
    # the distributions costs a second on a large environment).
    roots: set[str] = set()
    for site_dir in [*site.getsitepackages(), site.getusersitepackages()]:
        for pth in Path(site_dir).glob("*.pth") if os.path.isdir(site_dir) else ():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in pth.read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith(("#", "import")) and os.path.isdir(line):
                        roots.add(str(Path(line).resolve()) + os.sep)
    return tuple(roots)


def _editable_names() -> set[str]:
    # Newer editable installs map their top-level names in a finder module instead.
    names: set[str] = set()
    for name, module in list(sys.modules.items()):
        mapping = getattr(module, "MAPPING", None) if name.startswith("__editable__") else None
        if isinstance(mapping, dict):
            names.update(mapping)
    return names


def _decide(top: str) -> bool:
    if top in _ALWAYS_BY_REFERENCE:
        return _ALWAYS_BY_REFERENCE[top]
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(top)
    where = getattr(module, "__file__", None)
    if where is None:  # a namespace package or a built-in: nothing of ours to send
        paths = list(getattr(module, "__path__", []) or [])
        if not paths:
            return True
        where = paths[0]
    resolved = str(Path(where).resolve())
    if resolved.startswith(_installed_roots()):
        return True
    # An editable install lives outside site-packages but is still installed.
    return resolved.startswith(_editable_roots()) or top in _editable_names()


#: Asks the workers which of these top-level modules they can import.
Asker = Callable[[set[str]], set[str]]


def travels_by_reference(module_name: str) -> bool:
    """Whether the workers import ``module_name`` themselves (as decided so far).

    An installed module: yes. Another one: as the workers answered when it was first sent,
    else no (see the module docstring).
    """
    top = module_name.partition(".")[0]
    with _lock:
        known = _decided.get(top)
    return known if known is not None else _decide(top)


def by_value_modules() -> set[str]:
    """The top-level modules decided so far to travel by value."""
    with _lock:
        return {name for name, ref in _decided.items() if not ref}


def _send_by_value(top: str) -> bool:
    """Register ``top`` with cloudpickle as by value; False when it cannot be (not loaded)."""
    global generation
    import cloudpickle

    module = sys.modules.get(top)
    if module is None or top == "__main__":
        return False
    with _lock:
        if _decided.get(top) is False and top in cloudpickle.list_registry_pickle_by_value():
            return False
        _decided[top] = False
        cloudpickle.register_pickle_by_value(module)
        generation += 1
    return True


def learn_missing(module_name: str | None) -> bool:
    """A worker could not import ``module_name``: send it by value from now on.

    Returns:
        True when the module now travels by value (so a resend can succeed).
    """
    if not module_name:
        return False
    import cloudpickle

    top = module_name.partition(".")[0]
    _send_by_value(top)
    return top in cloudpickle.list_registry_pickle_by_value()


def _module_of(obj: Any) -> str | None:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, (types.FunctionType, type)):
        return getattr(obj, "__module__", None)
    module = getattr(type(obj), "__module__", None)
    return module if isinstance(module, str) else None


class _Recorder(pickle.Pickler):
    """The C pickler, noting the module of every function, class and instance it meets."""

    def __init__(self, buf: io.BytesIO) -> None:
        super().__init__(buf, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        module = _module_of(obj)
        if module:
            self.modules.add(module)
        return NotImplemented


def _cloud_dumps(obj: Any) -> tuple[bytes, set[str]]:
    import cloudpickle

    modules: set[str] = set()

    class Recorder(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, value: Any) -> Any:
            module = _module_of(value)
            if module:
                modules.add(module)
            return super().reducer_override(value)

    buf = io.BytesIO()
    Recorder(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue(), modules


def _local(modules: set[str], ask: Asker | None) -> set[str]:
    """The top-level modules among ``modules`` that must travel by value."""
    out: set[str] = set()
    undecided: set[str] = set()
    for top in {m.partition(".")[0] for m in modules} - {"__main__"}:
        with _lock:
            known = _decided.get(top)
        if known is None and _decide(top):
            with _lock:
                _decided.setdefault(top, True)
        elif known is None:
            undecided.add(top)
        elif not known:
            out.add(top)
    if undecided:
        # Not installed here, yet the workers may import it (the embedded cluster gets this
        # process's import path): by reference then, so that module state stays shared.
        there = ask(undecided) if ask is not None else set()
        with _lock:
            for top in undecided:
                if not _decided.setdefault(top, top in there):
                    out.add(top)
    return out


def dumps(obj: Any, usual: bytes | None = None, ask: Asker | None = None) -> bytes | None:
    """Serialise ``obj`` for the cluster when some of its code must travel by value.

    Args:
        obj: a function (with its constants) or the argument columns of a chunk.
        usual: its usual serialisation, when already made (it is scanned, not remade).
        ask: asks the workers about modules that are not installed here (else: by value).

    Returns:
        cloudpickle bytes with every local module sent by value, or None when nothing in
        ``obj`` needs that (then the usual bytes serve).
    """
    if usual is None:
        recorder = _Recorder(io.BytesIO())
        try:
            recorder.dump(obj)
            local = _local(recorder.modules, ask)
        except Exception:  # lambdas and the like: let cloudpickle look at it
            local = {"?"}
        if not local:
            return None
    # Registering a module can reveal more (a local helper imported by a local module):
    # repeat until nothing new is found, at most once per module.
    for _ in range(64):
        data, modules = _cloud_dumps(obj)
        local = _local(modules, ask)
        new = [m for m in local if _send_by_value(m)]
        if not new:
            return data if local or "__main__" in {
                m.partition(".")[0] for m in modules} or usual is None else None
    raise JustDistributeError("too many local modules to send by value")


# -- shipping a local package -------------------------------------------------------------
def _zip_of(path: Path) -> tuple[str, set[str]]:
    """A zip to put on the workers' import path, and the top-level names it provides."""
    fd, archive = tempfile.mkstemp(prefix="just-distribute-ship-", suffix=".zip")
    os.close(fd)
    names: set[str] = set()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        if path.is_file():
            zf.write(path, path.name)
            names.add(path.stem)
        else:
            # A package (it has __init__.py) goes in under its own name; a plain folder
            # of modules goes in as its contents.
            base = path.parent if (path / "__init__.py").exists() else path
            for file in sorted(path.rglob("*.py")):
                if "__pycache__" in file.parts:
                    continue
                rel = file.relative_to(base)
                zf.write(file, rel.as_posix())
                names.add(rel.parts[0].removesuffix(".py"))
    return archive, names


def ship_to(client: Any, path: str | os.PathLike[str]) -> set[str]:
    """Put a local package, folder of modules or ``.py`` file on every worker of ``client``.

    Workers that join later get it too (dask keeps it as a worker plugin). Its modules then
    travel by reference.

    Returns:
        The top-level module names it provides.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    where = Path(path).resolve()
    if not where.exists():
        raise FileNotFoundError(f"ship(): {str(path)!r} does not exist; pass a package "
                                f"folder, a folder of modules or a .py file")
    archive, names = _zip_of(where)
    try:
        # load=True: only then does each worker put the archive on its import path.
        client.upload_file(archive, load=True)
    finally:
        os.unlink(archive)
    with _lock:
        for name in names:
            _decided[name] = True
    return names


# -- versions -----------------------------------------------------------------------------
@functools.cache
def versions() -> dict[str, str]:
    """:func:`local_versions`, computed once per process."""
    return local_versions()


def local_versions() -> dict[str, str]:
    """What must match between a client and its workers for pickles to cross."""
    versions = {"python": "{}.{}".format(*sys.version_info[:2])}
    for name in ("just_distribute", "cloudpickle", "dill"):
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except Exception:
            versions[name] = "not installed"
    return versions


def check_versions(address: str, here: dict[str, str], there: dict[str, Any]) -> None:
    """Compare the client's versions with each worker's (``client.run(local_versions)``).

    Raises:
        VersionMismatchError: a worker differs; the message names both sides.
    """
    for worker, theirs in sorted(there.items()):
        if not isinstance(theirs, dict):
            continue
        differ = [k for k in here if theirs.get(k) != here[k]]
        if differ:
            both = ", ".join(f"{k} {here[k]} here, {theirs.get(k, '?')} there" for k in differ)
            raise VersionMismatchError(
                f"the dask worker {worker} of the scheduler at {address} runs other versions "
                f"than this client ({both}): work pickled here would not load there. "
                f"Install the same versions on both sides."
            )
