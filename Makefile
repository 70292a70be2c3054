# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# uv does not read pip's config: hand it pip's find-links (where the CPU torch wheel lives).
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
UV_FLAGS := $(foreach d,$(FIND_LINKS),--find-links $(d))
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist): CI has 2 cores. A module's tests stay on one worker (loadfile), so
# its module fixtures (a trained model, a finished investigation) are built once; modules go out in
# collection order (xdist's default puts the modules with fewest tests, here the longest, last).
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install lock test test-fast check bench demo-run clean investigate

include mk/infra.mk

# Installs come from the lock file alone (exact versions of every package, dev tools included), so a
# fresh clone gets what the tests last passed with; `make lock` upgrades on purpose.
LOCK := requirements.lock
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
UV_VERSION = $(shell sed -n 's/^uv==//p' $(LOCK))

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(PY) -m uv pip sync -q -p $(PY) $(UV_FLAGS) $(LOCK)
	$(PY) -m uv pip install -q -p $(PY) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolves every dependency to its newest allowed release and rewrites the lock (then: make test).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(PY) -m uv pip compile -q --upgrade --extra dev $(UV_FLAGS) $(LOCK_TARGET) \
		--custom-compile-command "make lock" pyproject.toml -o $(LOCK)

# The README's test command: installs what is missing, then runs every tier.
test: install infra check
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# Local loop: skip the slow tiers.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Lint and type-check (also the first step of make test).
check: install
	$(PY) -m ruff check spd_core spd_mcp tests bench
	$(PY) -m ruff format --check spd_core spd_mcp tests bench
	$(PY) -m basedpyright

# An investigation of the demo run, followed live: make investigate Q="Which components implement induction?"
Q ?= How does the model choose between he and she?
RUN ?= demo
investigate: install
	OMP_NUM_THREADS=1 $(VENV)/bin/spd-investigate "$(Q)" --run $(RUN) --follow

bench: install
	OMP_NUM_THREADS=1 $(PY) -m bench.run

# Regenerates the shipped demo run (spd_core/demo_run) from scratch with fixed seeds.
demo-run: install
	OMP_NUM_THREADS=1 $(PY) -m spd_core.demo

clean:
	rm -rf $(VENV) .pytest_cache
