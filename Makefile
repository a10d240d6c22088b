# mmgraph: `make test` and `make demo` work on a fresh machine (they create .venv and install everything).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the optional dependencies installed (.ci/run adds ray, for the Ray Serve replica test)
EXTRAS ?= dev
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast test-all lint demo graph clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so the project's torch range installs nothing bigger.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q --durations=15

# the unit tests: no end-to-end runs of servers, evaluations, training or compilation (tests marked integration)
test-fast: venv
	$(PY) -m pytest -q -m "not slow and not gpu and not integration" --durations=10

# ruff (lint + format check), mypy on the model's rooms, import-linter (the layering contract, docs/architecture.md)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

demo: venv
	$(VENV)/bin/mmgraph demo --out out/demo

graph: venv
	$(VENV)/bin/mmgraph graph

clean:
	rm -rf $(VENV) out
