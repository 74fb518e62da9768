# Set-up is part of every target: a fresh clone needs Python 3.11+ and Node.js 20 with npm (the
# web app is built by make demo and make test; the tRPC and bell tests run Node); the browser
# tests need Chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

WEB_BUILT := src/treevu/webui/index.html
WEB_SOURCES := $(shell find web/app/src web/bell/src -type f 2>/dev/null) web/app/index.html \
	web/app/vite.config.ts web/app/package.json web/app/package-lock.json

.PHONY: demo test test-lowest lint typecheck unit bench install clean web

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,mysql,postgres,redis]'
	touch $(STAMP)

install: $(STAMP)

# The dashboards and the bell (Node.js 20 and npm): built when missing or older than a source.
$(WEB_BUILT): $(WEB_SOURCES)
	cd web/app && npm ci --no-audit --no-fund --loglevel=error && npm run build

web: $(WEB_BUILT)

demo: $(STAMP) $(WEB_BUILT)
	$(BIN)/treevu demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck $(WEB_BUILT)
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The lower bounds of pyproject.toml really work: every runtime dependency (backend extras too) at
# the lowest version it allows, in a venv of its own, runs the unit tests.
LOWEST := .venv-lowest
test-lowest: $(STAMP)
	rm -rf $(LOWEST) && $(PYTHON) -m venv $(LOWEST)
	$(BIN)/python .ci/lowest_constraints.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev,mysql,postgres,redis]'
	@echo "lowest allowed: $$(tr '\n' ' ' < $(LOWEST)/constraints.txt)"
	$(LOWEST)/bin/pytest -q -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BIN)/python bench/segmentation.py
	$(BIN)/python bench/ws_memory.py
	$(BIN)/python bench/ws_throughput.py --ack --scenarios throughput-noack,throughput,latency-noack,latency,fanout
	$(BIN)/python bench/ws_scale.py
	$(BIN)/python bench/ws_handshake.py
	$(BIN)/python bench/ws_storm.py
	$(BIN)/python bench/ws_storm.py --split --out bench/results/ws_storm_split.json
	$(BIN)/python bench/outages.py
	$(BIN)/python bench/segmentation.py --sizes 1000000 --backends postgresql --first-only --out bench/results/segmentation_postgresql_1m.json
	$(BIN)/python bench/segmentation.py --sizes 1000000 --backends mariadb --first-only --out bench/results/segmentation_mariadb_1m.json
	$(BIN)/python bench/campaigns.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/web_pages.py
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/analytics_eval.py
	$(BIN)/python bench/models.py
	cd bench/artillery && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python bench/artillery_run.py
	$(BIN)/python bench/targets.py

clean:
	rm -rf $(VENV) $(LOWEST) .treevu .mypy_cache .ruff_cache .pytest_cache src/treevu/webui web/app/node_modules bench/artillery/node_modules
