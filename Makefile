# The two commands of the README, and the small ones they are made of.
# Everything installs into .venv at the repo root; nothing is installed system-wide except
# Debian's chromium for the browser test (only when running as root, e.g. in CI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-unit lint format catalog bench-clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## Set up and run the demo on http://127.0.0.1:8084
demo: $(VENV)/.runtime
	$(PY) demo_server.py

## Set up and run lint and the whole test suite
test: $(VENV)/.dev
	./scripts/ensure-chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest tests/unit tests/integration

## The fast tier alone: no Redis, no model, a few seconds
test-unit: $(VENV)/.dev
	$(PY) -m pytest tests/unit

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(VENV)/.dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## Re-embed data/products.jsonl into catalog.json
catalog: $(VENV)/.runtime
	$(PY) build_catalog.py

.PHONY: redis-ha redis-cluster

## A local primary, 2 replicas and 3 Sentinels (service mymaster) from the bundled Redis; Ctrl-C stops them
redis-ha: $(VENV)/.runtime
	$(PY) local_ha.py ha

## A local 3-master Redis Cluster from the bundled Redis; Ctrl-C stops it
redis-cluster: $(VENV)/.runtime
	$(PY) local_ha.py cluster

.PHONY: demo-ha
BASE_PORT ?= 26400

## The demo through Sentinel on a local primary, 2 replicas and 3 Sentinels (ports BASE_PORT..+5); Ctrl-C stops all
demo-ha: $(VENV)/.runtime
	PY=$(PY) ./scripts/demo-ha $(BASE_PORT)
