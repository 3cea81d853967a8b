# Switchboard — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,embeddings,voice,kube]'
	@touch $(STAMP)

SYSTEM_TOOLS := espeak-ng sox
system-deps: ## install the Debian tools the voice tests use (espeak-ng, sox) when missing
	@missing=$$(for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

install: $(STAMP) system-deps ## create .venv and install Switchboard with its dev tools and extras (bench, embeddings, voice, kube)

run: $(STAMP) ## start nats-server, every agent and the edge (Ctrl-C stops all)
	$(BIN)/switchboard run

chat: $(STAMP) ## talk to the running system (set SWITCHBOARD_API_KEY to the key `make run` printed)
	$(BIN)/switchboard chat

test: audit-deps test-python test-containers ## run the whole test suite: dependency audit, unit, contract, system (real processes), containers

audit-deps: $(STAMP) ## pip-audit the installed dependencies for known vulnerabilities (PIP_AUDIT_ARGS=--strict: unaudited ones fail too)
	$(BIN)/python deploy/audit_deps.py $(PIP_AUDIT_ARGS)

test-python: $(STAMP) system-deps ## the whole suite but the container tests (PYTEST_ARGS passes pytest options)
	SWITCHBOARD_NODE_CLIENTS=required $(BIN)/python -m pytest -q -p no:cacheprovider -m "not bench" --ignore=tests/containers $(PYTEST_ARGS)

test-containers: $(STAMP) ## build the image from scratch, run it and docker-compose.yml with podman (installs podman)
	deploy/container-tools.sh
	CONTAINERS_CONF=$(CURDIR)/deploy/containers.conf $(BIN)/python -m pytest -q -p no:cacheprovider tests/containers

image: ## build the container image localhost/switchboard:latest with podman (EXTRAS=voice adds offline speech)
	deploy/container-tools.sh
	deploy/build-image.sh localhost/switchboard:latest $(if $(EXTRAS),--build-arg EXTRAS=$(EXTRAS))

bench: $(STAMP) ## run the benchmark; results in bench/results/ and the README table
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-voice: $(STAMP) system-deps ## offline speech: real-time factors, latencies, CPU per audio second, concurrency (bench/results/voice.*)
	$(BIN)/python bench/voice.py $(VOICE_ARGS)

bench-scaling: $(STAMP) ## per-specialist scaling: replicas of one slow specialist vs its throughput (SCALING_ARGS=--replicas 1,2)
	$(BIN)/python bench/scaling.py $(SCALING_ARGS)

bench-history: $(STAMP) ## turn cost at 10 vs 2,000 history items (bench/results/history.*)
	$(BIN)/python bench/history.py $(HISTORY_ARGS)

bench-capacity: $(STAMP) ## check the capacity model's predicted CPU against a paced run here
	$(BIN)/python -m pytest -q -p no:cacheprovider -m bench -s tests/system/test_capacity.py

chaos: $(STAMP) ## kill/stop real processes mid-turn under load; results in chaos/results/ and the README (CHAOS_ARGS=--quick)
	$(BIN)/python chaos/run.py $(CHAOS_ARGS)

schemas: $(STAMP) ## regenerate schemas/v1 (refuses changes that break v1 consumers)
	$(BIN)/switchboard schemas

chart-schema: $(STAMP) ## refresh the scenario part of charts/switchboard/values.schema.json from ScenarioConfig
	$(BIN)/python charts/tools/scenario_schema.py

lint: $(STAMP) ## ruff format check and lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP) ## mypy --strict on the library and services
	$(BIN)/mypy -p switchboard -p switchboard_edge -p switchboard_agent -p switchboard_supervisor

check: lint typecheck test ## everything CI cares about

clean: ## remove runtime data and logs (var/)
	rm -rf var

.PHONY: help install run chat test test-python test-containers image bench bench-capacity bench-history bench-scaling chaos schemas chart-schema lint typecheck check clean
