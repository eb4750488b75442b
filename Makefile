# s4op — make demo (a small real search end to end) and make test (the whole suite).
# Both set up .venv first, from requirements.lock: every package pinned, transitive ones included,
# with hashes; torch is the CPU build 2.13.0+cpu that lies on this machine's disk.
# `make lock` regenerates the lock from pyproject.toml (see README, Development).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
S4OP := $(VENV)/bin/s4op
STAMP := $(VENV)/.s4op-installed
LOCK := requirements.lock
PIP_VERSION := 25.3
PIP_TOOLS_VERSION := 7.6.2
LOCKENV := .lockenv
LATEST_VENV := .venv-latest
DEMO_STORAGE ?= s4op-runs
TEST_WORKERS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast test-latest lock check-lock clean

setup: $(STAMP)

# A changed lock rebuilds the venv from nothing, so nothing outside the lock survives in it.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) devtools/check_lock.py $(LOCK)
	touch $(STAMP)

check-lock: setup
	$(PY) devtools/check_lock.py $(LOCK)

demo: setup
	$(S4OP) search demo-listops-s4d --storage $(DEMO_STORAGE) --name demo-$$(date -u +%Y%m%d-%H%M%S)

# Two pytest workers (pytest-xdist), a test file per worker at a time: the Ray tests mostly wait on
# process starts, so two at once finish the suite sooner on 2 cores (32 -> 21 min). Tests marked
# `serial` (latencies compared across moments) run afterwards on their own; both parts always run.
# TEST_WORKERS=0 runs everything in one process.
test: setup
	@status=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" tests || status=$$?; \
	$(PY) -m pytest -m serial tests || status=$$((status ? status : $$?)); \
	exit $$status

test-fast: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile tests -m "not slow and not cluster"

# Regenerate the lock (Python 3.11, linux x86_64, torch pinned by constraints.txt to the CPU build).
lock:
	$(PYTHON) -m venv $(LOCKENV)
	$(LOCKENV)/bin/python -m pip install -q pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	$(LOCKENV)/bin/pip-compile --quiet --generate-hashes --extra dev --all-build-deps --allow-unsafe \
	  --strip-extras --no-emit-index-url --no-emit-find-links -c constraints.txt \
	  --output-file $(LOCK) pyproject.toml

# Not in CI: the newest versions pyproject.toml's ranges allow (torch stays the CPU build on disk),
# running the fast tests, so drift is found before the lock is bumped.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(LATEST_VENV)/bin/python -m pip install --upgrade --upgrade-strategy eager -c constraints-latest.txt -e '.[dev]'
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python -m pytest tests -m "not slow and not cluster"

clean:
	rm -rf $(VENV) $(LOCKENV) $(LATEST_VENV) .pytest_cache .hypothesis
