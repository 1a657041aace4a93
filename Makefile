# The two commands of the README, and the small ones they are made of.
# Everything installs into .venv at the repo root; nothing is installed system-wide except
# Debian's chromium for the browser test (only when running as root, e.g. in CI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-unit lint lock format catalog bench-clean

# requirements.txt and requirements-dev.txt are locks: every package, transitive ones included, at
# the exact version the tests ran on, compiled by pip-compile from requirements.in and
# requirements-dev.in (`make lock`). They pin versions, not hashes: torch is the CPU build, whose
# file (2.13.0+cpu, from this machine's wheel store or PyTorch's CPU index) differs from the CUDA
# file PyPI serves for the same version, so no hash could match both. `torch==2.13.0` accepts
# either build; the local label is dropped from the lock for that reason.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

PIP_COMPILE = $(VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe --no-header --annotation-style=line \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
DROP_LOCAL_LABEL = sed -i -E 's/^torch==([0-9.]+)\+cpu /torch==\1     /'

## Re-compile both locks from the .in files; UPGRADE=--upgrade (all) or UPGRADE="--upgrade-package NAME"
lock: $(VENV)/.dev
	$(PIP_COMPILE) $(UPGRADE) -o requirements.txt requirements.in
	$(DROP_LOCAL_LABEL) requirements.txt
	$(PIP_COMPILE) $(UPGRADE) -o requirements-dev.txt requirements-dev.in
	$(DROP_LOCAL_LABEL) requirements-dev.txt

## Set up and run the demo on http://127.0.0.1:8084
demo: $(VENV)/.runtime
	$(PY) demo_server.py

# The library as pyproject's [tool.mypy] says; the tests and benchmarks too, whose fixtures'
# parameters may go unannotated (pytest supplies them) but whose bodies are checked.
TYPECHECK = $(PY) -m mypy && $(PY) -m mypy --allow-untyped-defs tests bench

## Set up and run lint and the whole test suite
test: $(VENV)/.dev
	./scripts/ensure-chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(TYPECHECK)
	$(PY) -m pytest tests/unit tests/integration

## The fast tier alone: no Redis, no model, a few seconds
test-unit: $(VENV)/.dev
	$(PY) -m pytest tests/unit

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(TYPECHECK)

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
