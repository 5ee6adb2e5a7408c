"""The package's layout holds: no module reaches itself through its imports.

import-linter's contracts (``lint-imports``, in ``make test``) keep the layers; this test
adds what a layers contract cannot see: a cycle between two modules of the same layer or
between a package and its own submodules, counting imports inside functions.
"""

from __future__ import annotations

import subprocess
import sys

import grimp


def test_no_module_imports_another_that_imports_it_back() -> None:
    graph = grimp.build_graph("just_distribute", exclude_type_checking_imports=True)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []


def test_a_worker_process_imports_only_the_transport() -> None:
    # What a compute worker imports to run a chunk: the package's lazy __init__ must not
    # pull in the front-ends (decorator, pool, engine, planning) or dask.
    code = (
        "import sys, just_distribute.executors.process_main, just_distribute.calls;"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('just_distribute'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    for front in ("decorator", "pool", "engine", "planning", "tasks", "service", "loadtest"):
        assert f"just_distribute.{front}" not in loaded, loaded
    assert "just_distribute.executors.chunk" in loaded or "just_distribute.executors" in loaded


def test_public_import_paths_keep_working() -> None:
    import just_distribute
    from just_distribute.pool import Pool, PoolTerminatedError
    from just_distribute.service import ServiceHandle, start_service

    assert just_distribute.Pool is Pool
    assert just_distribute.PoolTerminatedError is PoolTerminatedError
    assert issubclass(PoolTerminatedError, just_distribute.JustDistributeError)
    assert callable(start_service) and isinstance(ServiceHandle, type)
    for name in just_distribute.__all__:
        assert getattr(just_distribute, name) is not None, name
