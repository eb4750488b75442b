# s4op — make demo (a small real search end to end) and make test (the whole suite).
# Both set up .venv first; setup pins torch 2.13.0 (CPU wheel on this machine) via constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
S4OP := $(VENV)/bin/s4op
STAMP := $(VENV)/.s4op-installed
DEMO_STORAGE ?= s4op-runs
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(S4OP) search cpu-listops-s4d --storage $(DEMO_STORAGE) --name demo-$$(date -u +%Y%m%d-%H%M%S)

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not slow and not cluster"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
