#!/usr/bin/env sh
# Print the path of a working Python X.Y interpreter (`sh tools/find_python.sh 3.12`),
# or exit 1, printing nothing, if this machine has none. Used by `make test-all`.
# (Paths with spaces are not supported.)
#
# Looked for in this order, and each candidate is run to check it is really
# X.Y and can make a venv (a pyenv shim on PATH exists but fails for a
# version that is not selected; Debian's python3.X lacks ensurepip without
# the python3.X-venv package):
#   1. python3.X on PATH
#   2. $(pyenv root)/versions/X.Y.*/bin/python3.X, newest patch first, if pyenv is installed
#   3. ${PYENV_ROOT:-$HOME/.pyenv}/versions/X.Y.*/bin/python3.X (pyenv not on PATH)
#   4. /usr/local/bin/python3.X, /usr/bin/python3.X
set -u
version=${1:?usage: find_python.sh X.Y}

works() {
    [ -x "$1" ] || return 1
    "$1" -c "import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" \
        >/dev/null 2>&1
}

# The versions/X.Y.* interpreters under a pyenv root, newest patch release first.
pyenv_versions() {
    [ -d "$1/versions" ] || return 0
    for dir in "$1/versions/$version".*; do
        [ -x "$dir/bin/python$version" ] || continue
        patch=${dir##*/"$version".}
        echo "${patch%%[!0-9]*} $dir/bin/python$version"
    done | sort -k1,1nr | cut -d' ' -f2-
}

candidates() {
    command -v "python$version" 2>/dev/null
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_versions "$(pyenv root 2>/dev/null)"
    fi
    pyenv_versions "${PYENV_ROOT:-${HOME:-/root}/.pyenv}"
    echo "/usr/local/bin/python$version"
    echo "/usr/bin/python$version"
}

for candidate in $(candidates); do
    if works "$candidate"; then
        echo "$candidate"
        exit 0
    fi
done
exit 1
