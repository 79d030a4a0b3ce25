# Set-up lives here so a fresh machine needs one command to serve and one to test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck unit fuzz container-test image train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The service needs only the runtime dependencies; tests add the dev and training extras.
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

## serve: install if needed, then serve the shipped models on http://$(HOST):$(PORT)
serve: $(RUNTIME_STAMP)
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

## test: install if needed, then lint (incl. the app/training import contract), type-check and run the whole test suite
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check app training tests bench
	$(BIN)/ruff format --check app training tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

## fuzz: schemathesis against a live server, from the app's own OpenAPI schema
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -m fuzz tests/fuzz

## container-test: build the image with buildah, run it with podman, check it (see docs/deployment.md)
container-test:
	bash .ci/container-test

## image: build the image with a Docker engine
image:
	docker build -t vision-serving:0.1.0 .

## train: retrain the shipped models from the data in DATA (see README)
DATA ?= ../shared/data
train: $(STAMP)
	$(BIN)/python -m training train mnist-mlp --data $(DATA)/mnist.npz --model-dir models
	$(BIN)/python -m training train mnist-lenet5 --data $(DATA)/mnist.npz --model-dir models
	$(BIN)/python -m training train pneumonia-cnn --data $(DATA)/chest_xray --model-dir models

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
