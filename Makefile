# Switchboard — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,embeddings]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Switchboard with its dev tools

run: $(STAMP) ## start nats-server, every agent and the edge (Ctrl-C stops all)
	$(BIN)/switchboard run

chat: $(STAMP) ## talk to the running system (set SWITCHBOARD_API_KEY to the key `make run` printed)
	$(BIN)/switchboard chat

test: $(STAMP) ## run the whole test suite (unit, contract, system with real processes)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) ## run the benchmark; results in bench/results/ and the README table
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-scaling: $(STAMP) ## per-specialist scaling: replicas of one slow specialist vs its throughput (SCALING_ARGS=--replicas 1,2)
	$(BIN)/python bench/scaling.py $(SCALING_ARGS)

bench-history: $(STAMP) ## turn cost at 10 vs 2,000 history items (bench/results/history.*)
	$(BIN)/python bench/history.py $(HISTORY_ARGS)

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

.PHONY: help install run chat test bench bench-history bench-scaling chaos schemas chart-schema lint typecheck check clean
