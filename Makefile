# Set-up is part of every target: a fresh clone needs only Python 3.11+ (and Node.js for the
# tRPC client tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/treevu demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python bench/segmentation.py
	$(BIN)/python bench/ws_memory.py
	$(BIN)/python bench/ws_throughput.py
	$(BIN)/python bench/ws_scale.py
	$(BIN)/python bench/ws_handshake.py
	$(BIN)/python bench/ws_storm.py

clean:
	rm -rf $(VENV) .treevu .mypy_cache .ruff_cache .pytest_cache
