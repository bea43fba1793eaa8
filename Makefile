# hydrarec: the only entry point. `make test` sets up everything it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/movielens.toml
DATA ?= movielens
ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test lint fmt train serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[serve,train,dev]'
	touch $(STAMP)

install: $(STAMP)  ## editable install of the package with every extra

test: $(STAMP)  ## the whole suite, with coverage
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

lint: $(STAMP)  ## ruff, formatting, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service training

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train: $(STAMP)  ## train on $(DATA) with $(CONFIG) -> models/<name>/<next version>/ + reports/
	$(BIN)/python -m training train --config $(CONFIG) --data $(DATA) $(ARGS)

serve: $(STAMP)  ## serve models/ (the committed default model) on $(HOST):$(PORT)
	HYDRAREC_HOST=$(HOST) HYDRAREC_PORT=$(PORT) $(BIN)/python -m service

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage
