# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the running python3 and install from pyproject.toml.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest docs bench bench-instructions bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m asyncpool demo $(ARGS)

test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/cpu.py

# Deterministic: counts instructions under valgrind (apt-get install valgrind).
bench-instructions: $(STAMP)
	$(BIN)/python benchmarks/instructions.py

# asyncpool against its peers (aiojobs, asyncio-pool, aiometer, anyio, ...):
# writes docs/explanation/benchmarks.md and docs/_static/bench-*.png.
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/peers.py $(ARGS)

clean:
	rm -rf $(VENV) docs/_build .mypy_cache .pytest_cache .ruff_cache
