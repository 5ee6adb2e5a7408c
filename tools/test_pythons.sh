#!/usr/bin/env bash
# make test-pythons: the test suite (not lint, types or docs) on each extra supported Python.
#
#   tools/test_pythons.sh 3.12 3.13 [-- PYTEST ARGS...]
#
# For each version found on this machine (tools/find_python.sh) it makes the test-only
# environment .venv-X.Y through the Makefile (its stamp rule: the test and all extras), then
# runs pytest in it. A version that is not found is skipped, and said so, unless
# REQUIRE_PYTHONS=1 (CI), where that fails. The summary says what ran, how long it took,
# what was skipped and why; the exit status is non-zero when a suite failed.
set -u
cd "$(dirname "$0")/.."
make_cmd=${MAKE:-make}
versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ $# -gt 0 ] && shift   # the "--"; what is left goes to pytest
ran=() skipped=() failed=()
for v in "${versions[@]}"; do
    py=$(tools/find_python.sh "$v")
    if [ -z "$py" ]; then
        why="no python$v in ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*/bin or on PATH"
        echo "=== Python $v: skipped ($why)"
        skipped+=("Python $v: skipped ($why)")
        continue
    fi
    echo "=== Python $v ($py): the test suite in .venv-$v"
    started=$SECONDS
    if ! "$make_cmd" --no-print-directory ".venv-$v/.installed"; then
        failed+=("Python $v: could not make .venv-$v")
        continue
    fi
    setup=$((SECONDS - started))
    started=$SECONDS
    if ".venv-$v/bin/python" -m pytest "$@"; then
        ran+=("Python $v: passed in $((SECONDS - started)) s (environment: $setup s)")
    else
        failed+=("Python $v: FAILED after $((SECONDS - started)) s (environment: $setup s)")
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
