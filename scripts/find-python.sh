#!/bin/sh
# Prints the path of a working Python X.Y interpreter (the argument, e.g. 3.12) and exits 0, or
# exits 1 when there is none. Looks, in this order, on PATH (pythonX.Y; a pyenv shim counts only
# if it runs), in /usr/bin, and in pyenv's versions (${PYENV_ROOT:-~/.pyenv}/versions/X.Y.N,
# newest patch release first). Used by `make test-pythons`.
set -u
want=$1
root=${PYENV_ROOT:-$HOME/.pyenv}
pyenv_bins=$(ls -d "$root"/versions/"$want".* 2>/dev/null | grep -E "/$want\.[0-9]+$" | sort -rV |
    sed "s|\$|/bin/python$want|")
for candidate in "python$want" "/usr/bin/python$want" $pyenv_bins; do
    # The candidate must run and be X.Y itself; print the real interpreter, not a shim.
    "$candidate" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$want' or print(sys.executable))" \
        2>/dev/null && exit 0
done
exit 1
