# Developer and CI entry points. `make test` is the one test command (CI runs it via .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp lives inside the venv: deleting the venv also forgets that it was installed, and
# editing pyproject.toml (new dependency, new extra) triggers a reinstall.
STAMP := $(VENV)/.tusserver-installed
# `make run` needs only the runtime dependencies: a first start should not wait for the test
# toolchain (pytest, mypy, moto, schemathesis, playwright). The dev install satisfies it too.
RUN_STAMP := $(VENV)/.tusserver-runtime-installed
# Where `make run` listens and keeps its data: HOST=0.0.0.0 PORT=9090 make run, or the TUS_*
# variables (TUS_HOST, TUS_PORT, TUS_DATA_DIR), which the server reads itself.
HOST ?= $(or $(TUS_HOST),127.0.0.1)
PORT ?= $(or $(TUS_PORT),8080)
DATA_DIR ?= $(or $(TUS_DATA_DIR),./data)
PYTEST_ARGS ?=

.PHONY: help install run lint typecheck test e2e bench bench-quick bench-single bench-catalog soak clean

help:
	@echo "make run        start the server on http://127.0.0.1:8080/files/ (data in ./data;"
	@echo "                HOST=, PORT=, DATA_DIR= or TUS_HOST/TUS_PORT/TUS_DATA_DIR change them)"
	@echo "make test       install, lint, typecheck, then every test (e2e included)"
	@echo "make lint       ruff check + ruff format --check + lint-imports (layer contracts)"
	@echo "make typecheck  mypy (strict, configured in pyproject.toml)"
	@echo "make bench      tusserver vs @tus/server and tuspyserver (not part of make test); prints a table"
	@echo "make bench-quick  the same, smaller sizes, about three minutes"
	@echo "make bench-single one upload in a single PATCH: MB/s, CPU, peak RSS vs the loopback limit"
	@echo "make bench-catalog  catalog list/search queries on SQLite and Postgres; prints a table"
	@echo "make soak       tens of thousands of requests, malformed ones too: no 5xx, memory back near baseline"
	@echo "make e2e        only the end-to-end tests (real server, tuspy, tus-js-client)"
	@echo "make clean      remove caches, build output, the node_modules of tests and bench, bench's tuspyserver venv"

install: $(STAMP)

# A venv without pip is what Debian leaves behind when python3-venv (ensurepip) is missing;
# test for pip, not for the directory, so a retry after the apt install works.
define make_venv
	@if [ ! -x $(BIN)/pip ]; then \
		echo "creating $(VENV) with $$($(PYTHON) --version 2>&1)"; \
		if ! $(PYTHON) -m venv $(VENV) || [ ! -x $(BIN)/pip ]; then \
			echo "" >&2; \
			echo "error: '$(PYTHON) -m venv' could not create $(VENV) (ensurepip is missing)." >&2; \
			echo "hint:  apt-get install python3-venv   (then run make again)" >&2; \
			exit 1; \
		fi; \
	fi
endef

$(STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/pip install --disable-pip-version-check --no-input -q -e '.[dev]'
	@touch $@ $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/pip install --disable-pip-version-check --no-input -q -e .
	@touch $@

run: $(RUN_STAMP)
	$(BIN)/tusserver serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Pytest exits 5 when it collected no test. CI counts any non-zero exit as a failed run, and
# an empty suite is reported as "ran no test" anyway, so say it loudly and exit 0.
test: install lint typecheck
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "warning: pytest collected no tests (exit 5)" >&2; rc=0; fi; \
	exit $$rc

e2e: install
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run --no-catalog $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-single: install
	$(BIN)/python -m bench.single_patch $(BENCH_ARGS)

bench-catalog: install
	$(BIN)/python -m bench.catalog_list $(BENCH_ARGS)

# SOAK_ARGS: --requests N, --rounds N, --auth, --trust-proxy, --redis, --s3, --json FILE ...
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Keeps .venv (shared, slow to rebuild) and ./data (somebody's uploads).
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache build dist *.egg-info tests/e2e/js/node_modules
	rm -rf bench/reference/node_modules bench/.tuspyserver-venv
	rm -rf test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -f $(STAMP) $(RUN_STAMP)
