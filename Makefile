# hydrarec: the only entry point. `make test` sets up everything it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
# checkov (deploy/k8s security checks) pins packaging<24, which pytest 9 cannot take: own venv
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_PIN := checkov==3.3.30
# BentoML, a peer in `make bench ARGS=--peers`, pins its own stack: its own venv too
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
# Where pip takes torch from. Default: PyTorch's CPU-only index, so an ordinary Linux machine
# does not download the multi-GB CUDA build (macOS wheels are CPU builds anyway); left empty,
# and pip's own configuration used unchanged, when pip already has a local wheel folder
# (PIP_FIND_LINKS or find-links in pip's config), as on the machines this project is built on.
# `make install TORCH_INDEX=` (empty) takes torch from PyPI; any other index URL works too.
TORCH_INDEX ?= $(if $(PIP_FIND_LINKS)$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),,https://download.pytorch.org/whl/cpu)
TORCH_PIN := $(shell sed -n 's/.*"\(torch==[^"]*\)".*/\1/p' pyproject.toml)
CONFIG ?= configs/movielens.toml
DATA ?= movielens
# make sasrec: a held-out model (train --no-refit): v9, the last default model published as
# evaluated (a refit learned its test events, and sasrec refuses it)
MODEL ?= models/movielens/9
# make relatedness: the served default (its gates; the runs take its config and split)
RELATEDNESS_MODEL ?= models/movielens/16
ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000
DOCS_PORT ?= 8001
# mkdocs-material's notice about its successor is not a warning about these docs
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
COMPOSE ?= docker compose
COMPOSE_FILE := docker/compose.yml
# Debian packages the checks and system tests run: promtool + prometheus, docker-compose (v1).
DEBIAN_PACKAGES := prometheus docker-compose nginx chromium redis-server

# The experiment grid trains 45 models, so each is a smaller, faster version of the default
# (same data, tasks and protocol): ~50 min for the grid on 2 cores.
EXPERIMENT_ARGS ?= --network.history_length=100 --network.encoder_length=20 \
	--network.d_embedding=32 --network.d_hidden=32 --optim.n_negatives=4 \
	--optim.batch_size=512 --optim.lr=0.002 --optim.epochs=12 --optim.patience=2

GRID ?= multitask content quality  # `make experiment GRID=content`: the item-content ablation only

.PHONY: install system-deps test fuzz lint docs docs-serve fmt train experiment crossval relatedness sasrec refit-study serve bench bench-train bench-replicas soak up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
		echo "torch from $(TORCH_INDEX)"; \
		$(BIN)/python -m pip install --quiet '$(TORCH_PIN)' --index-url '$(TORCH_INDEX)' \
		|| echo "warning: no torch from $(TORCH_INDEX); PyPI's follows (a CUDA build on Linux x86-64)" >&2; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[serve,train,dev]'
	touch $(STAMP) $(SERVE_STAMP)

$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

$(CHECKOV): Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet $(CHECKOV_PIN)
	touch $(CHECKOV)

$(PEERS_STAMP): bench/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEERS_STAMP)

install: $(STAMP)  ## editable install of the package with every extra (torch: see TORCH_INDEX)

system-deps:  ## the Debian packages the tests run for real (installed when missing, as root)
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null \
		&& command -v docker-compose >/dev/null && command -v nginx >/dev/null \
		&& command -v chromium >/dev/null && command -v redis-server >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); \
	else \
		echo "missing Debian packages: run  sudo apt-get install -y $(DEBIAN_PACKAGES)" >&2; exit 1; \
	fi

test: $(STAMP) $(CHECKOV) system-deps  ## the whole suite, with coverage
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

fuzz: $(STAMP)  ## the OpenAPI fuzz run with 500 examples per operation (make test runs 25)
	FUZZ_EXAMPLES=500 $(BIN)/python -m pytest tests/fuzz -p no:cacheprovider

lint: $(STAMP) $(CHECKOV) system-deps  ## ruff, formatting, mypy, hadolint, compose, Prometheus, Kubernetes files, the docs site
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service training eventstore bench harness
	$(BIN)/hadolint docker/*.Dockerfile
	GRAFANA_ADMIN_PASSWORD=lint docker-compose -f $(COMPOSE_FILE) config --quiet
	promtool check config docker/prometheus.yml
	promtool check rules docker/alerts.yml
	$(BIN)/kubernetes-validate --strict --quiet $(filter-out %/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
	$(CHECKOV) -d deploy/k8s --framework kubernetes --compact --quiet --skip-download
	$(MKDOCS) build --strict

docs: $(STAMP)  ## the documentation site (docs/, mkdocs-material) built strictly into site/: a broken link or anchor fails
	$(MKDOCS) build --strict

docs-serve: $(STAMP)  ## serve the documentation on http://$(HOST):$(DOCS_PORT), rebuilt as pages change
	$(MKDOCS) serve --strict --dev-addr $(HOST):$(DOCS_PORT)

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train: $(STAMP)  ## train on $(DATA) with $(CONFIG) -> models/<name>/<next version>/ + reports/
	$(BIN)/python -m training train --config $(CONFIG) --data $(DATA) $(ARGS)

experiment: $(STAMP)  ## multi-task grid, item-content ablation, quality ladder, 3 seeds -> reports/{experiments,content,quality}.md
	for grid in $(GRID); do \
		$(BIN)/python -m training experiment --grid $$grid --config $(CONFIG) --data $(DATA) \
			$(EXPERIMENT_ARGS) $(ARGS) || exit 1; \
	done

crossval: $(STAMP)  ## 5-fold profile holdout of $(CONFIG): figures over every user with bootstrap intervals -> reports/crossval.md
	$(BIN)/python -m training crossval --config $(CONFIG) --data $(DATA) $(ARGS)

relatedness: $(STAMP)  ## what the tasks share: $(RELATEDNESS_MODEL)'s gates, every block's gradient cosines, leave-one-task-out (3 seeds, the grid's smaller network) -> reports/relatedness.md
	$(BIN)/python -m training relatedness --model $(RELATEDNESS_MODEL) $(EXPERIMENT_ARGS) $(ARGS)

sasrec: $(STAMP)  ## SASRec, the ranking anchor, against $(MODEL) on the same test events (3 seeds) -> reports/sasrec.md
	$(BIN)/python -m training sasrec --model $(MODEL) $(ARGS)

refit-study: $(STAMP)  ## the refit against the held-out model on each user's next interactions, through /predict, for the defaults and $(CONFIG) -> reports/refit-*.md
	$(BIN)/python -m training refit-study --data $(DATA) $(ARGS)
	$(BIN)/python -m training refit-study --config $(CONFIG) --data $(DATA) $(ARGS)

serve: $(SERVE_STAMP)  ## serve models/ (the committed default model) on $(HOST):$(PORT); installs .[serve] only
	HYDRAREC_HOST=$(HOST) HYDRAREC_PORT=$(PORT) $(BIN)/python -m service

bench: $(STAMP) $(if $(findstring --peers,$(ARGS)),$(PEERS_STAMP))  ## in-process limit vs HTTP with wrk -> bench/results.md (wrk installed as root if missing); ARGS=--peers: FastAPI, bare ASGI and BentoML beside it; recommend mode at 1.7k, 100k and 1M items -> bench/recommend.md; the event store (SQLite, Redis) -> bench/events.md; explained requests against plain ones -> bench/explain.md
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk; } \
		|| { echo "missing wrk: run  sudo apt-get install -y wrk" >&2; exit 1; }
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench.recommend
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.explain

bench-train: $(STAMP)  ## prepare + train at 1M and 10M interactions, 1 and 2 ranks -> bench/training.md; 3-seed parity -> bench/parity.md
	$(BIN)/python -m bench.scaling $(ARGS)
	$(BIN)/python -m bench.parity

bench-replicas: $(STAMP) system-deps  ## wrk through nginx: 1 replica direct vs 2 behind nginx, a replica killed -> bench/replicas.md
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk; } \
		|| { echo "missing wrk: run  sudo apt-get install -y wrk" >&2; exit 1; }
	$(BIN)/python -m bench.replicas $(ARGS)

soak: $(STAMP)  ## 50,000 requests against the real server: RSS at start and end, errors -> bench/soak.md
	$(BIN)/python -m bench.soak $(ARGS)

up:  ## build and start service + Prometheus + Grafana (needs Docker and GRAFANA_ADMIN_PASSWORD)
	$(COMPOSE) -p hydrarec -f $(COMPOSE_FILE) up -d --build

down:  ## stop the stack (volumes, with the models trained in it, are kept)
	$(COMPOSE) -p hydrarec -f $(COMPOSE_FILE) down

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage site
