#!/bin/sh
# Makes the virtualenv DIR afresh with the interpreter PYTHON and installs exactly
# requirements.lock into it, every file checked against the lock's hashes, then the project
# itself, editable, without dependencies and without a build environment (setuptools comes
# from the lock). Two pip calls: an editable install has no hash to check. Needs PyPI (or pip's
# cache), not uv. -qq: errors only (a machine's pip configuration may name extra indexes or
# folders that are absent, a warning per package). Usage: sh scripts/install-venv.sh PYTHON DIR
# (the Makefile's venv rules).
set -eu
python=$1
venv=$2
cd "$(dirname "$0")/.."
rm -rf "$venv"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -qq --require-hashes -r requirements.lock
"$venv/bin/python" -m pip install -qq --no-deps --no-build-isolation -e .
