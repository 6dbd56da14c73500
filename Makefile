# One entry point for people and CI.  `make start` runs the whole stack; `make test` is what CI runs.
SHELL := /bin/bash
VENV ?= .venv
# `make clean` deletes $(VENV): refuse a value that would take more than a virtualenv with it.
ifneq ($(words $(VENV)),1)
$(error VENV='$(VENV)' must be one path: not empty, no spaces)
endif
ifneq ($(filter $(abspath $(VENV)),/ $(abspath $(HOME)) $(CURDIR))$(filter $(abspath $(VENV))/%,$(CURDIR)/),)
$(error VENV='$(VENV)' is /, your home, this checkout or a folder holding it: refusing)
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KAFKA := kafka/kafka.sh
KAFKA_PORT ?= 9092
export KAFKA_PORT

.PHONY: env build start stop tail clean test kafka kafka-stop bench bench-peers test-tools help

help:
	@echo "make start   run the stack (Docker if an engine answers, else local processes) and print the dashboard URL"
	@echo "make stop    stop it;  make tail  follow its logs;  make test  run the test suite"
	@echo "make bench   measure the engine and a 2018 day end to end;  make bench-peers  beside Quix Streams"
	@echo "make env     create $(VENV) and install;  make kafka / kafka-stop  the local broker;  make clean  remove all state"
	@echo "KAFKA_NODES=3 make kafka   a local 3-node cluster instead (127.0.0.1:19092,19094,19096; kafka/kafka.sh status|stop|kill|start N)"

$(STAMP): pyproject.toml
	test -x "$(PY)" || python3 -m venv "$(VENV)"
	"$(PY)" -m pip install -q --upgrade pip
	"$(PY)" -m pip install -q -e '.[dev]'
	touch "$(STAMP)"

# The dashboard's browser libraries (uPlot), pinned in dashboard/package-lock.json, served from
# dashboard/static/vendor/ (build output, gitignored).
VENDOR := dashboard/static/vendor/.installed
$(VENDOR): dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p dashboard/static/vendor
	cp dashboard/node_modules/uplot/dist/uPlot.iife.min.js dashboard/node_modules/uplot/dist/uPlot.min.css \
	   dashboard/node_modules/uplot/LICENSE dashboard/static/vendor/
	touch $(VENDOR)

env: $(STAMP) $(VENDOR)

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work offline).
# Debian packages the tests use: chromium for the browser tests, shellcheck for the scripts.
test-tools:
	@command -v chromium >/dev/null && command -v shellcheck >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium shellcheck >/dev/null; }

build: env
	@if docker info >/dev/null 2>&1; then docker compose build; else echo "no Docker engine: nothing to build beyond $(VENV)"; fi

kafka:
	@$(KAFKA) start

kafka-stop:
	@$(KAFKA) stop

start: env
	@scripts/stack.sh start

stop:
	@scripts/stack.sh stop

tail:
	@scripts/stack.sh tail

# Starts the broker if needed, runs pytest, stops the broker only if this run started it.
test: env test-tools
	@started=0; if ! $(KAFKA) status >/dev/null 2>&1; then $(KAFKA) start && started=1; fi; \
	$(PY) -m pytest -q -ra --durations=25; rc=$$?; \
	if [ $$started = 1 ]; then $(KAFKA) stop; fi; exit $$rc

# Quick: BENCH_ENGINE_EVENTS=30000 BENCH_DAY_EVENTS=30000 make bench (defaults 300,000 and a whole
# 2018 day, 1,248,000 events; BENCH_ENGINE_RUNS, BENCH_DAY_RUNS: 3; queries: BENCH_QUERY_EVENTS=200000,
# BENCH_QUERY_SECONDS=4, BENCH_QUERY_ROUNDS=3).  See benchmarks/README.md.
bench: env kafka
	@$(PY) -m benchmarks.engine_throughput
	@$(PY) -m benchmarks.end_to_end_day
	@$(PY) -m benchmarks.queries

# Quix Streams pins its own confluent-kafka: it gets a virtualenv of its own, never $(VENV).
PEERS_VENV := benchmarks/peers/.venv
PEERS_STAMP := $(PEERS_VENV)/.installed
$(PEERS_STAMP): benchmarks/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	touch $(PEERS_STAMP)

# Quick: BENCH_PEERS_EVENTS=30000 make bench-peers (default 312,000 events; BENCH_PEERS_ROUNDS: 2).
bench-peers: env kafka $(PEERS_STAMP)
	@$(PY) -m benchmarks.peers.compare --quix-python $(PEERS_VENV)/bin/python

clean: stop
	-$(KAFKA) clean
	-if [ -d kafka/run-cluster ]; then KAFKA_NODES=3 KAFKA_RUN_DIR=kafka/run-cluster $(KAFKA) clean; fi
	rm -rf -- "$(VENV)" "$(PEERS_VENV)" .stack *.egg-info dashboard/node_modules dashboard/static/vendor
