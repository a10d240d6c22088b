# mmgraph: `make test` and `make demo` work on a fresh machine (they create .venv and install everything).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-all demo graph clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so the project's torch range installs nothing bigger.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

demo: venv
	$(VENV)/bin/mmgraph demo --out out/demo

graph: venv
	$(VENV)/bin/mmgraph graph

clean:
	rm -rf $(VENV) out
