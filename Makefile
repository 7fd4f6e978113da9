# tokenbus: `make run` starts everything locally; `make test` runs the whole suite.
SHELL := /bin/bash
# uv comes from PATH, or is installed once (pinned, with pip) into .tools/uv: a machine with
# Python 3.11, Java 17 and Maven needs nothing else for `make run` and `make test`.
UV_VERSION := 0.13.8
UV_DIR := .tools/uv
PYTHON ?= python3
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_DIR)/bin/uv)
UV_BOOTSTRAP := $(filter $(UV_DIR)/bin/uv,$(UV))
PY := $(UV) run --frozen
KAFKA_POM := infra/kafka/pom.xml
KAFKA_LIBS := infra/kafka/.libs
KAFKA_DATA ?= .kafka-data
PYTEST_ARGS ?=
DURATION ?= 600
# Renders infra/k8s where kubectl (which has it built in) is missing: tests/unit/test_k8s.py.
KUSTOMIZE_VERSION := v5.5.0
KUSTOMIZE := .tools/bin/kustomize
# Checks infra/prometheus/alerts.yml (tests/unit/test_alerts.py); built once from source.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := .tools/bin/promtool

.PHONY: help install kafka-jars kafka-up kafka-down kafka-status topics run test test-unit \
        test-kafka test-e2e chaos soak bench asyncapi lint fmt clean screenshot kustomize promtool

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(UV_DIR)/bin/uv:
	@echo "uv not found on PATH: installing uv $(UV_VERSION) into $(UV_DIR) with pip"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(UV_DIR) "uv==$(UV_VERSION)"

install: $(UV_BOOTSTRAP) ## Python deps from the lockfile into .venv
	$(UV) sync --frozen

$(KAFKA_LIBS)/.done: $(KAFKA_POM)
	mvn -B -q -f $(KAFKA_POM) dependency:copy-dependencies
	touch $@

kafka-jars: $(KAFKA_LIBS)/.done ## Fetch Apache Kafka's jars with Maven (cached in ~/.m2)

kafka-up: install kafka-jars ## Start the local KRaft broker on 127.0.0.1:9092 and create topics
	$(PY) python -m infra.kafka.local up --data-dir $(KAFKA_DATA)

kafka-down: ## Stop the local broker
	$(PY) python -m infra.kafka.local down --data-dir $(KAFKA_DATA)

kafka-status:
	$(PY) python -m infra.kafka.local status --data-dir $(KAFKA_DATA)

topics: install ## Create the registry's topics on $$KAFKA_BOOTSTRAP_SERVERS (idempotent)
	$(PY) tokenbus topics

run: install kafka-jars ## Broker, llmsim (or OpenAI), inference and gateway; Ctrl-C stops all
	$(PY) tokenbus dev

test: install kafka-jars $(PROMTOOL) ## The whole suite: unit, real-broker integration, end to end
	$(PY) pytest $(PYTEST_ARGS)

test-unit: install ## Fast tests, no broker
	$(PY) pytest -m "not kafka and not e2e" $(PYTEST_ARGS)

test-kafka: install kafka-jars ## Real-broker tests only
	$(PY) pytest -m "kafka" $(PYTEST_ARGS)

chaos: install kafka-jars ## Faults on purpose only: broker killed and frozen, worker and gateway killed, PostgreSQL stopped (docs/reliability.md)
	$(PY) pytest tests/chaos $(PYTEST_ARGS)

soak: install kafka-jars ## Mixed load at half the benchmark's maximum for DURATION s (600): mismatches, usage, RSS and fds
	$(PY) python -m services.bench.soak --duration $(DURATION) --json docs/bench/soak.json --plot docs/bench/soak.png

bench: install kafka-jars ## Benchmark: tokenbus vs direct llmsim, 1..1000 streams (< 15 min)
	$(PY) python -m services.bench --json docs/bench/latest.json --plot docs/bench/latest.png

asyncapi: install ## Regenerate docs/asyncapi.yaml from the FastStream apps
	$(PY) faststream docs gen --factory services.asyncapi:create_app --yaml -o docs/asyncapi.yaml

lint: install ## ruff (lint and format check) and mypy (strict on contracts/ and services/common/)
	$(PY) ruff check .
	$(PY) ruff format --check .
	$(PY) mypy

fmt: install
	$(PY) ruff check --fix .

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/.tools/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

kustomize: $(KUSTOMIZE) ## Pinned kustomize into .tools/bin (needs Go), for machines without kubectl

$(PROMTOOL):
	GOBIN=$(CURDIR)/.tools/bin go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

promtool: $(PROMTOOL) ## Pinned promtool into .tools/bin (needs Go; a few minutes to build)

clean:
	rm -rf .run $(KAFKA_DATA) .pytest_cache .tools

# Tests write only into pytest's tmp dir; this names docs/webchat.png for the one screenshot.
screenshot: install kafka-jars ## Re-make docs/webchat.png from a real run in Chromium
	TOKENBUS_SCREENSHOT=docs/webchat.png $(PY) pytest -p no:cacheprovider tests/e2e/test_webchat.py \
		-k "TestConversation and token_by_token" $(PYTEST_ARGS)
