# The two commands: `make run` (embedded Temporal dev server + worker + sample portfolio)
# and `make test` (the whole suite). Both create the virtualenv on first use, from the lock
# file requirements.lock (exact versions, hash-checked; `make lock` regenerates it,
# docs/operations.md "Versions and Pythons"); a changed lock or pyproject.toml makes the virtualenv afresh.
# `make codec-server` lets the Web UI decode the encrypted payloads (see the `make run` banner).
# `make test` runs the database tests on SQLite and on a throwaway PostgreSQL cluster; it first
# makes sure the PostgreSQL server is installed (scripts/ensure-postgres.sh; docs/database.md),
# and the desk's browser tests that Debian's Chromium and a CJK font are (scripts/ensure-chromium.sh).
# `make test-pythons` runs the suite (without the crash test) on the other supported Pythons.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The other Pythons `make test-pythons` looks for (scripts/find-python.sh), each in .venv-X.Y.
PYTHONS ?= 3.12 3.13
TEST_PYTHONS_ARGS ?= -m "not crash" -q
# `make lock`'s tool, in a virtualenv of its own (only `make lock` needs it).
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv

.PHONY: run test check test-pythons lock soak worker api codec-server clean bytecode

$(STAMP): $(LOCK) pyproject.toml
	sh scripts/install-venv.sh $(PYTHON) $(VENV)
	touch $@

# Regenerates requirements.lock from pyproject.toml: run it after changing a dependency, its
# range or requires-python, or to take newer releases, then run the tests before committing the
# lock. Needs the network to PyPI. One universal lock for every platform and Python 3.11 to 3.13,
# with the hashes of every file; the build backend comes along (group `build`). Pins already in
# the lock are kept where the ranges allow them; `make lock UPGRADE=1` takes the newest releases.
lock: $(UV)
	UV_PYTHON_DOWNLOADS=never $(UV) pip compile pyproject.toml --extra test --group build \
		--universal --python-version 3.11 --generate-hashes --quiet \
		$(if $(UPGRADE),--upgrade) --custom-compile-command "make lock" -o $(LOCK)

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -qq --disable-pip-version-check uv==$(UV_VERSION)

# The workflow sandbox imports the workflow modules afresh for every new workflow; without
# bytecode on disk (PYTHONDONTWRITEBYTECODE=1 is set on some machines) it compiles them from
# source each time, about a third of the worker's CPU while loans start. Compile them once.
bytecode: $(STAMP)
	$(PY) -m compileall -q config.py worker.py starter.py models workflows activities db ops infra client

run: bytecode
	$(PY) worker.py --embedded

test: bytecode check
	sh scripts/ensure-postgres.sh
	sh scripts/ensure-chromium.sh
	$(PY) -m pytest

# Lint, format and types, whole project (configured in pyproject.toml); seconds. The folder rules
# (import-linter) run inside the suite (tests/unit/test_layout.py). `$(VENV)/bin/ruff format .`
# fixes the format.
check: bytecode
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The suite on each of PYTHONS found on this machine, each in its .venv-X.Y made from the lock as
# .venv is; a version not found is skipped with a line saying so. Not part of `make test`
# (docs/operations.md, "Versions and Pythons").
test-pythons:
	sh scripts/ensure-postgres.sh
	@failed=""; for v in $(PYTHONS); do \
		if ! py=$$(sh scripts/find-python.sh $$v); then \
			echo "test-pythons: Python $$v not found (PATH, /usr/bin, pyenv): skipped"; continue; fi; \
		echo "test-pythons: Python $$v: $$py"; \
		$(MAKE) --no-print-directory bytecode VENV=.venv-$$v PYTHON=$$py && \
		.venv-$$v/bin/python -m pytest $(TEST_PYTHONS_ARGS) || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-pythons: failed on$$failed"; exit 1; fi

# The crash test soaked: 5 seeds x (SQLite, PostgreSQL), 250 loans, 8 worker and 2 server SIGKILLs
# per run, each run its own pytest process; prints the figures, writes var/soak/<time>.json, fails
# if any run had any problem. SOAK_SEEDS, SOAK_SEED_LIST, SOAK_BACKENDS, SOAK_LOANS,
# SOAK_WORKER_KILLS, SOAK_SERVER_KILLS change it (bench/soak.py).
soak: bytecode
	sh scripts/ensure-postgres.sh
	$(PY) bench/soak.py

worker: bytecode
	$(PY) worker.py

# The HTTP API alone (API_HOST, API_PORT), against TEMPORAL_ADDRESS and DATABASE_URL; run several
# behind a load balancer (docs/api.md). `make run` serves it too.
api: $(STAMP)
	$(PY) -m api

codec-server: $(STAMP)
	$(PY) -m infra.codec_server

clean:
	rm -rf $(VENV) .venv-3.* $(UV_VENV) var .pytest_cache
