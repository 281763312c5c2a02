# Conclave: the two commands are `make run` and `make test` (README.md).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
export CARGO_TERM_PROGRESS_WHEN ?= never

.PHONY: help run build build-release test lint fmt services azurite oidc-provider s3-emulator test-rust test-sdk test-fuzz bench clean

help:
	@echo "make run    build Conclave and start it on http://127.0.0.1:8080 (SQLite, local data folder)"
	@echo "make test   lints, then every test (Rust on SQLite and PostgreSQL)"
	@echo "make build  debug build;  make lint  fmt + clippy;  make bench  benchmarks (bench/RESULTS.md)"

## Build the release binary and start the server on the embedded default.
run: build-release
	./target/release/conclave serve

build:
	$(CARGO) build --workspace --locked

build-release:
	$(CARGO) build --release --locked -p conclave

## Everything CI runs: fast lints first, then the suites against the real services.
test: lint services azurite oidc-provider s3-emulator test-rust test-sdk test-fuzz

VENV := .venv
PY := $(VENV)/bin/python

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## PostgreSQL and Redis must answer on 127.0.0.1; restart them if they are down.
services:
	@scripts/services.sh

## Azurite (npm), the Azure Blob emulator the object-store tests run against, installed into
## tests/azurite/node_modules from its lock file, again only when the lock changes.
AZURITE_DIR := tests/azurite
azurite: $(AZURITE_DIR)/node_modules/.installed

$(AZURITE_DIR)/node_modules/.installed: $(AZURITE_DIR)/package-lock.json $(AZURITE_DIR)/package.json
	cd $(AZURITE_DIR) && npm ci --silent --no-audit --no-fund
	touch $@

## The OpenID Connect provider the single sign-on tests sign in against (npm oidc-provider),
## installed into tests/oidc/node_modules from its lock file, again only when the lock changes.
OIDC_DIR := tests/oidc
oidc-provider: $(OIDC_DIR)/node_modules/.installed

$(OIDC_DIR)/node_modules/.installed: $(OIDC_DIR)/package-lock.json $(OIDC_DIR)/package.json
	cd $(OIDC_DIR) && npm ci --silent --no-audit --no-fund
	touch $@

test-rust: azurite oidc-provider s3-emulator
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --locked --no-fail-fast; \
	fi

## Python tools in a project venv (ignored by git), installed once.
$(VENV)/.installed: tests/sdk/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
	touch $@

## moto's S3 server (PyPI), the S3-compatible store the object-store tests run against, in the
## same venv, installed once (its own stamp).
s3-emulator: $(VENV)/.s3-installed

$(VENV)/.s3-installed: tests/s3/requirements.txt | $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/s3/requirements.txt
	touch $@

## The official openai SDK, unchanged, against the gateway of a real server.
test-sdk: $(VENV)/.installed
	$(CARGO) build --locked -p conclave -p conclave-mock-provider
	$(PY) -m pytest -q tests/sdk

## schemathesis, in the same venv, installed once (its own stamp).
$(VENV)/.fuzz-installed: tests/fuzz/requirements.txt | $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
	touch $@

## API fuzzing: schemathesis over the published OpenAPI document of a real server (SQLite);
## no 5xx, and every status, content type and body as declared. Bounded to about 4 minutes.
test-fuzz: $(VENV)/.fuzz-installed
	$(CARGO) build --locked -p conclave
	scripts/fuzz-api.sh

## Benchmarks: figures printed and recorded in bench/RESULTS.md (never part of `make test`).
bench: build-release
	$(CARGO) build --release --locked -p conclave-mock-provider
	$(CARGO) build --release --locked -p conclave-loadgen
	bench/startup.py
	bench/stream.py
	bench/documents.py --no-build

clean:
	$(CARGO) clean
