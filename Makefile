# The single entry point: make run | up | down | test | lint | bench | api-key
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: help venv check-tools run up down status test test-unit lint bench api-key seed-data clean report-data

help:
	@echo "make run      start the local cloud and the functions gateway (foreground, Ctrl-C stops)"
	@echo "make up|down  the same in the background / stop it"
	@echo "make test     run the whole test suite (starts the local cloud when it is not running)"
	@echo "make lint     ruff and mypy (strict)"
	@echo "make bench    benchmark the engine against the physical limit [BENCH_SIZES=100,1000 BENCH_ARGS=--only engine]"
	@echo "make api-key TENANT=name [ROLE=admin]   create an API key (printed on the last line)"
	@echo "make seed-data [DAYS=30 SOLICITUDES_POR_DIA=2000] [TENANT=catalogo COUNT=300]   the marketplace's dataset and a catalog of articles with images (local cloud up; the catalog's API key on the last line)"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

check-tools:
	@command -v java >/dev/null || { echo "error: java not found; the Firestore emulator needs Java 11+ (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@test -f "$${FIRESTORE_EMULATOR_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}" || { echo "error: the Cloud Firestore emulator is missing; install the Google Cloud CLI and its firestore emulator (apt-get install google-cloud-cli google-cloud-cli-firestore-emulator)" >&2; exit 1; }

run: venv check-tools
	$(PY) -m infra.localcloud run

up: venv check-tools
	$(PY) -m infra.localcloud up

down:
	@if [ -x $(PY) ]; then $(PY) -m infra.localcloud down; else echo "local cloud not set up"; fi

status: venv
	$(PY) -m infra.localcloud status

test: venv check-tools
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: venv check-tools
	$(PY) -m tests.bench.run $(BENCH_ARGS)

api-key: venv
	@test -n "$(TENANT)" || { echo "usage: make api-key TENANT=name [ROLE=admin]" >&2; exit 2; }
	@$(PY) -m infra.api_key --tenant "$(TENANT)" --role "$(or $(ROLE),user)" $(if $(RATE_LIMIT),--rate-limit $(RATE_LIMIT))

# Synthetic invoice datasets for the reports: make report-data SIZE_MB=50 [OUT=.bench/facturas-50mb.json]
report-data: venv
	$(PY) -m infra.report_data --size-mb "$(or $(SIZE_MB),10)" --out "$(or $(OUT),.bench/facturas-$(or $(SIZE_MB),10)mb.json)"

seed-data: up
	$(PY) -m infra.seed_marketplace --days $(or $(DAYS),30) --solicitudes-por-dia $(or $(SOLICITUDES_POR_DIA),2000) $(if $(HASTA),--hasta $(HASTA)) $(if $(SEED),--seed $(SEED))
	@$(PY) -m infra.seed_data --tenant "$(or $(TENANT),catalogo)" --count "$(or $(COUNT),300)"

clean: down
	rm -rf $(VENV) .localcloud .pytest_cache .mypy_cache .ruff_cache .bench
