# Two commands on a fresh machine with Python >= 3.11:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo demo-quick test test-fast test-unit lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# One stamp per set of extras, remade when pyproject.toml changes.
$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[server,embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[server,embedded,nwb,rig,dev]'
	touch $(VENV)/.installed-server $@

demo: $(VENV)/.installed-server
	$(BIN)/stimloop demo

demo-quick: $(VENV)/.installed-server
	$(BIN)/stimloop demo --quick

# The full suite: lint, type check, every test (real processes and the quick demo included).
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The inner loop: no real server processes, no long fits (a few minutes on 2 cores).
test-fast: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not processes and not slow"

# Seconds, not minutes: neither Redis nor the backbone, no processes, no long fits (under 60 s).
test-unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not processes and not slow and not backbone and not redis"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The performance suite (tens of minutes on 2 CPU cores); results go to benchmarks/RESULTS.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.extract
	$(BIN)/python -m benchmarks.fit
	$(BIN)/python -m benchmarks.recovery
	$(BIN)/python -m benchmarks.selection
	$(BIN)/python -m benchmarks.saliency
	$(BIN)/python -m benchmarks.turnaround
	$(BIN)/python -m benchmarks.phase_three
	$(BIN)/python -m benchmarks.synthetic

clean-venv:
	rm -rf $(VENV)
