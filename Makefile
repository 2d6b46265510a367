# The two commands: `make run` (embedded Temporal dev server + worker + sample portfolio)
# and `make test` (the whole suite). Both create the virtualenv on first use.
# `make codec-server` lets the Web UI decode the encrypted payloads (see the `make run` banner).
# `make test` runs the database tests on SQLite and on a throwaway PostgreSQL cluster; it first
# makes sure the PostgreSQL server is installed (scripts/ensure-postgres.sh; README "Database").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test soak worker codec-server clean bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The workflow sandbox imports the workflow modules afresh for every new workflow; without
# bytecode on disk (PYTHONDONTWRITEBYTECODE=1 is set on some machines) it compiles them from
# source each time, about a third of the worker's CPU while loans start. Compile them once.
bytecode: $(STAMP)
	$(PY) -m compileall -q config.py worker.py starter.py models workflows activities db ops infra client

run: bytecode
	$(PY) worker.py --embedded

test: bytecode
	sh scripts/ensure-postgres.sh
	$(PY) -m pytest

# The crash test soaked: 5 seeds x (SQLite, PostgreSQL), 250 loans, 8 worker and 2 server SIGKILLs
# per run, each run its own pytest process; prints the figures, writes var/soak/<time>.json, fails
# if any run had any problem. SOAK_SEEDS, SOAK_SEED_LIST, SOAK_BACKENDS, SOAK_LOANS,
# SOAK_WORKER_KILLS, SOAK_SERVER_KILLS change it (bench/soak.py).
soak: bytecode
	sh scripts/ensure-postgres.sh
	$(PY) bench/soak.py

worker: bytecode
	$(PY) worker.py

codec-server: $(STAMP)
	$(PY) -m infra.codec_server

clean:
	rm -rf $(VENV) var .pytest_cache
