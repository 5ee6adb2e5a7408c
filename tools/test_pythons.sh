#!/usr/bin/env bash
# make test-pythons: the test suite (not lint, types or docs) on each extra supported Python.
#
#   tools/test_pythons.sh [--environments] 3.12 3.13 [-- PYTEST ARGS...]
#
# With --environments it only makes the environments (make test does that first, alone:
# the stages on .venv that run meanwhile rebuild the tree's metadata too, for make dist).
#
# For each version found on this machine (tools/find_python.sh) it makes the test-only
# environment .venv-X.Y through the Makefile (its stamp rule: the test and all extras), one
# after the other: each `pip install -e .` writes the same tree's build metadata. Then it runs
# pytest in every environment at the same time, each into its own log, .test-pythons/X.Y.log:
# the suite mostly waits (on worker processes, sockets, sleeps: about 0.7 of one core), so
# two or three suites share a 2-core machine at little cost each. Nothing the suites use is
# shared between them: free ports, pytest's own temporary folders, network namespaces
# named after the test process's id. TEST_PYTHONS_SERIAL=1 runs them one after the other.
#
# A version that is not found is skipped, and said so, unless REQUIRE_PYTHONS=1 (CI), where
# that fails. The summary says what ran, how long it took, what was skipped and why, and shows
# the end of a failed suite's log; the exit status is non-zero when a suite failed.
set -u
cd "$(dirname "$0")/.."
make_cmd=${MAKE:-make}
logs=.test-pythons
only_environments=0
if [ "${1:-}" = "--environments" ]; then only_environments=1; shift; fi
versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ $# -gt 0 ] && shift   # the "--"; what is left goes to pytest
mkdir -p "$logs"
ready=() skipped=() failed=()
declare -A setup
for v in "${versions[@]}"; do
    py=$(tools/find_python.sh "$v")
    if [ -z "$py" ]; then
        why="no python$v in ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*/bin or on PATH"
        echo "=== Python $v: skipped ($why)"
        skipped+=("Python $v: skipped ($why)")
        continue
    fi
    echo "=== Python $v ($py): the environment .venv-$v"
    started=$SECONDS
    if ! "$make_cmd" --no-print-directory ".venv-$v/.installed"; then
        failed+=("Python $v: could not make .venv-$v")
        continue
    fi
    setup[$v]=$((SECONDS - started))
    ready+=("$v")
done
if [ "$only_environments" = 1 ]; then
    [ ${#failed[@]} -eq 0 ] || { printf '  %s\n' "${failed[@]}"; exit 1; }
    exit 0
fi

run_suite() {  # VERSION PYTEST-ARGS...: the suite into its log; its status and time beside
    local v=$1 started=$SECONDS status
    shift
    # (In the background SIGINT starts ignored: tests/conftest.py puts Python's handler back.)
    ".venv-$v/bin/python" -m pytest "$@" >"$logs/$v.log" 2>&1
    status=$?
    echo "$status $((SECONDS - started))" >"$logs/$v.status"
}

pids=()
for v in "${ready[@]}"; do
    rm -f "$logs/$v.status"
    echo "=== Python $v: the test suite in .venv-$v (log: $logs/$v.log)"
    if [ "${TEST_PYTHONS_SERIAL:-0}" = 1 ]; then
        run_suite "$v" "$@"
    else
        run_suite "$v" "$@" &
        pids+=($!)
    fi
done
[ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"

ran=()
for v in "${ready[@]}"; do
    read -r status took <"$logs/$v.status" || { status=1; took="?"; }
    outcome=$(tail -n 1 "$logs/$v.log" | sed 's/^=* *//; s/ *=*$//')
    line="Python $v: $outcome; $took s (environment: ${setup[$v]} s)"
    if [ "$status" = 0 ]; then
        ran+=("$line")
    else
        echo "=== Python $v: FAILED; the end of $logs/$v.log:"
        tail -n 60 "$logs/$v.log"
        failed+=("$line: FAILED (pytest exit $status)")
    fi
done
echo "=== the suite on the extra Pythons"
for line in "${ran[@]}" "${failed[@]}" "${skipped[@]}"; do [ -n "$line" ] && echo "  $line"; done
[ ${#failed[@]} -eq 0 ] || exit 1
if [ ${#skipped[@]} -gt 0 ] && [ "${REQUIRE_PYTHONS:-0}" = 1 ]; then
    echo "REQUIRE_PYTHONS=1: a supported Python is missing" >&2
    exit 1
fi
exit 0
