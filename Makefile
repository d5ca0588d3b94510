# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the running python3 and install from pyproject.toml.
# `make test-all` (what CI runs) is `make test` and then the pytest suite on
# each other supported Python present (OTHER_PYTHONS), each in its own venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: signatures demo demo-cluster bench-distributed test test-all lint typecheck pytest docs dashboard-screenshots bench bench-instructions bench-peers soak stress load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m asyncpool demo $(ARGS)

# A private NATS server from the venv, two worker processes, a producer; one
# worker is killed with SIGKILL mid-run and every job is still accounted for.
demo-cluster: $(STAMP)
	$(BIN)/python -m asyncpool demo-cluster $(ARGS)

test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python tools/generate_signatures.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@sh tools/ensure_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# Every supported Python (pyproject.toml's classifiers): `make test` on the
# one of .venv (3.11: lint, types, docs and pytest), then the pytest suite
# alone on each of OTHER_PYTHONS that tools/find_python.sh finds (python3.X
# on PATH, else pyenv's versions/X.Y.*), in .venv-X.Y, made and installed
# like .venv (again when pyproject.toml changes). Lint, mypy and the docs
# run once: they do not depend on the interpreter (mypy checks for
# python_version 3.11, the oldest).
#
# A Python that is absent is reported and skipped, not a failure, under
# CI=true too: CI runs on whatever machine the submitting session had, which
# need not have pyenv's 3.12 and 3.13. The closing summary says which
# versions ran and which did not. REQUIRE_ALL_PYTHONS=1 makes an absent one
# fail the run instead.
OTHER_PYTHONS ?= 3.12 3.13
OTHER_VENVS := $(addprefix .venv-,$(OTHER_PYTHONS))
.PHONY: $(OTHER_PYTHONS:%=pytest-%)

test-all: test
	@ran="$$($(BIN)/python -c 'import platform; print(platform.python_version())') (.venv)"; absent=; \
	for version in $(OTHER_PYTHONS); do \
		if interpreter=$$(sh tools/find_python.sh $$version); then \
			echo "test-all: pytest on Python $$version ($$interpreter, in .venv-$$version)"; \
			$(MAKE) --no-print-directory pytest-$$version \
				|| { echo "test-all: pytest failed on Python $$version" >&2; exit 1; }; \
			ran="$$ran, $$(.venv-$$version/bin/python -c 'import platform; print(platform.python_version())') (.venv-$$version)"; \
		else \
			echo "test-all: NOTICE: no Python $$version on this machine (python$$version, pyenv): its tests did not run" >&2; \
			absent="$$absent $$version"; \
		fi; \
	done; \
	echo "test-all: pytest ran on Python $$ran"; \
	if [ -n "$$absent" ]; then \
		echo "test-all: NOTICE: absent, not tested:$$absent" >&2; \
		if [ "$(REQUIRE_ALL_PYTHONS)" = 1 ]; then exit 1; fi; \
	fi

$(OTHER_VENVS:%=%/bin/python): .venv-%/bin/python:
	@interpreter=$$(sh tools/find_python.sh $*) || { echo "no Python $* (tools/find_python.sh)" >&2; exit 1; }; \
	echo "$$interpreter -m venv --clear .venv-$*"; \
	$$interpreter -m venv --clear .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip

$(OTHER_VENVS:%=%/.installed): .venv-%/.installed: pyproject.toml | .venv-%/bin/python
	.venv-$*/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

# The pytest suite alone on Python X.Y (`make pytest-3.12`), from .venv-X.Y.
$(OTHER_PYTHONS:%=pytest-%): pytest-%: .venv-%/.installed
	@sh tools/ensure_chromium.sh
	.venv-$*/bin/python -m pytest $(PYTEST_ARGS)

# The dashboard's pictures in docs/howto/watch-your-pool.md (docs/_static/dashboard-*.png):
# the browser tests, saving each page they show at 1280x800. Needs Chromium
# (apt-get install chromium) and NATS JetStream on 127.0.0.1:4222 (or the
# venv's nats-server).
dashboard-screenshots: $(STAMP)
	@sh tools/ensure_chromium.sh
	ASYNCPOOL_SCREENSHOTS=docs/_static $(BIN)/python -m pytest tests/brokers/test_dashboard_browser.py -q $(PYTEST_ARGS)

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

# Both brokers against their peers, in one run: the JetStream broker against
# taskiq-nats, arq and a raw JetStream floor; the Redis broker against arq,
# SAQ, taskiq-redis and a raw Redis Streams floor. ARGS="--engine redis" (or
# jetstream) runs one engine, ARGS="--write-docs" rewrites
# docs/explanation/distributed-benchmarks.md and its plot, ARGS="--quick" is a
# smoke test. taskiq-redis needs redis-py 8 (arq, in .venv, below 6): it runs
# from .venv-peers/taskiq-redis, which the first run makes with pip (pinned in
# benchmarks/_peer_venvs.py). Needs NATS on 127.0.0.1:4222 and Redis on
# 127.0.0.1:6379 (database 13).
bench-distributed: $(STAMP)
	$(BIN)/python benchmarks/distributed.py $(ARGS)

# The whole suite N times over in random order (pytest-randomly, which
# pyproject.toml keeps off for every other run, and pytest-repeat); stops at
# the first failure. The seed is printed first; replay an order with
# `make soak PYTEST_ARGS=--randomly-seed=<seed>` (or `--randomly-seed=last`).
# The model-based test runs its long profile (ASYNCPOOL_STRESS=1: thousands
# of examples) in every pass.
N ?= 5
soak: $(STAMP)
	ASYNCPOOL_STRESS=1 $(BIN)/python -m pytest -p randomly --count=$(N) -x $(PYTEST_ARGS)

# The model-based test and the races with thousands of examples and dozens of
# seeds (ASYNCPOOL_STRESS=1), in random order, repeated STRESS_N times (the
# races; the state machine runs its examples once), under asyncio and uvloop.
STRESS_N ?= 2
stress: $(STAMP)
	ASYNCPOOL_STRESS=1 $(BIN)/python -m pytest -p randomly --count=$(STRESS_N) -x \
		tests/reliability/test_state_machine.py tests/reliability/test_races.py $(PYTEST_ARGS)

# Memory and correctness under load (benchmarks/load.py): a million jobs, an
# endless map(), 10,000 sleepers, keyed jobs with retries; fails on a wrong
# count or order, or on memory that grows. ARGS="--loop uvloop --scale 0.1".
load: $(STAMP)
	$(BIN)/python benchmarks/load.py $(ARGS)

# Rewrite asyncpool/_signatures.py (the typed overloads) from tools/generate_signatures.py.
signatures: $(STAMP)
	$(BIN)/python tools/generate_signatures.py

clean:
	rm -rf $(VENV) $(OTHER_VENVS) docs/_build .mypy_cache .pytest_cache .ruff_cache
