# The two commands: `make run` (embedded Temporal dev server + worker + sample portfolio)
# and `make test` (the whole suite). Both create the virtualenv on first use.
# `make codec-server` lets the Web UI decode the encrypted payloads (see the `make run` banner).
# `make test` runs the database tests on SQLite and on a throwaway PostgreSQL cluster; it first
# makes sure the PostgreSQL server is installed (scripts/ensure-postgres.sh; README "Database").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test worker codec-server clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) worker.py --embedded

test: $(STAMP)
	sh scripts/ensure-postgres.sh
	$(PY) -m pytest

worker: $(STAMP)
	$(PY) worker.py

codec-server: $(STAMP)
	$(PY) codec_server.py

clean:
	rm -rf $(VENV) var .pytest_cache
