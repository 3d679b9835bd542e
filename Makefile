# loyalty_model — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PRESET ?= small
SEED ?= 7
BRAND ?= b0004
BUDGET ?= 50000
BENCH_PRESETS ?= small,medium
BENCH_ENGINES ?= duckdb,spark

.PHONY: help setup demo test lint format bench docs clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the package with dev and spark extras

demo: setup ## Simulate `small`, validate, train + register a model, predict, plan, report
	$(BIN)/loyalty-model simulate --preset $(PRESET) --seed $(SEED) --out $(DEMO_DIR)/data
	$(BIN)/loyalty-model validate --data $(DEMO_DIR)/data
	$(BIN)/loyalty-model train --config configs/default.yaml --data $(DEMO_DIR)/data
	$(BIN)/loyalty-model predict --data $(DEMO_DIR)/data --brand $(BRAND) --out $(DEMO_DIR)/predictions
	$(BIN)/loyalty-model plan --data $(DEMO_DIR)/data --brand $(BRAND) --budget $(BUDGET) \
		--predictions $(DEMO_DIR)/predictions --out $(DEMO_DIR)/plan
	$(BIN)/loyalty-model report --predictions $(DEMO_DIR)/predictions --plan $(DEMO_DIR)/plan \
		--out $(DEMO_DIR)/report.html

test: setup ## Run the whole test suite
	$(BIN)/pytest

bench: setup ## Benchmarks as ratios to raw baselines, both engines (bench/results.json)
	$(BIN)/python benchmarks/bench.py --presets $(BENCH_PRESETS) --engines $(BENCH_ENGINES)

lint: setup ## Ruff lint and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

docs: setup ## Regenerate docs/configuration.md from the config models
	$(BIN)/python -c "from loyalty_model.config import reference_markdown as r; print(r(), end='')" > docs/configuration.md

clean: ## Remove the venv, demo output and caches
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache mlflow.db mlflow.db.lock mlruns \
		.loyalty-cache
