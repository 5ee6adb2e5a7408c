#!/usr/bin/env bash
# Print the path of an interpreter for Python X.Y ($1): pyenv's newest X.Y.z (under
# $PYENV_ROOT, default ~/.pyenv), else pythonX.Y on PATH. Prints nothing when none runs.
# Used by the Makefile for the .venv-X.Y environments and by tools/test_pythons.sh.
set -u
want=${1:?usage: tools/find_python.sh X.Y}
root=${PYENV_ROOT:-$HOME/.pyenv}
candidates=$(ls -d "$root"/versions/"$want".*/bin/python"$want" 2>/dev/null | sort -V -r)
candidates="$candidates $(command -v "python$want" 2>/dev/null || true)"
for py in $candidates; do
    # A pyenv shim for a version that is not selected exits non-zero: it does not count.
    if "$py" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$want')" \
        >/dev/null 2>&1; then
        echo "$py"
        exit 0
    fi
done
exit 0
