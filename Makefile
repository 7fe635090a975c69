# The single entry point: make run | up | down | test | lint | bench | api-key
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: help venv check-tools check-browser run up down status test test-unit lint bench fuzz chaos api-key seed-data clean report-data

help:
	@echo "make run      start the local cloud and the functions gateway (foreground, Ctrl-C stops)"
	@echo "make up|down  the same in the background / stop it"
	@echo "make test     run the whole test suite (starts the local cloud when it is not running)"
	@echo "make lint     ruff and mypy (strict)"
	@echo "make bench    benchmark the engine against the physical limit [BENCH_SIZES=100,1000 BENCH_ARGS=--only engine]"
	@echo "make fuzz     schemathesis against every public function's OpenAPI document [FUZZ_ARGS='--only batch --max-examples 40']"
	@echo "make chaos [CHAOS_ARGS=--only name,name]   fault scenarios on a local cloud of its own, checked against the history"
	@echo "make api-key TENANT=name [ROLE=admin]   create an API key (printed on the last line)"
	@echo "make seed-data [DAYS=30 SOLICITUDES_POR_DIA=2000] [TENANT=catalogo COUNT=300]   the marketplace's dataset and a catalog of articles with images (local cloud up; the catalog's API key on the last line)"

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# Browser libraries from the npm registry, each folder pinned by its package-lock.json (--ignore-scripts:
# nothing runs at install time): Swagger UI for GET /<function>/docs, and the dashboard's Preact, htm and
# Chart.js, served by functions/dashboard.py.
APIDOCS := shared/apidocs
DASHBOARD := shared/dashboard
%/node_modules/.package-lock.json: %/package.json %/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 20 (apt-get install nodejs npm)" >&2; exit 1; }
	cd $* && npm ci --ignore-scripts --no-audit --no-fund --silent

venv: $(VENV)/.installed $(APIDOCS)/node_modules/.package-lock.json $(DASHBOARD)/node_modules/.package-lock.json

check-tools:
	@command -v java >/dev/null || { echo "error: java not found; the Firestore emulator needs Java 11+ (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@test -f "$${FIRESTORE_EMULATOR_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}" || { echo "error: the Cloud Firestore emulator is missing; install the Google Cloud CLI and its firestore emulator (apt-get install google-cloud-cli google-cloud-cli-firestore-emulator)" >&2; exit 1; }
	@test -x "$${DASHBOARD_CHROMIUM:-/usr/bin/chromium}" || echo "warning: chromium not found; make test needs it for the dashboard's browser test (apt-get install chromium)" >&2

# The dashboard's browser test drives Debian's chromium (never a downloaded browser build).
check-browser:
	@test -x "$${DASHBOARD_CHROMIUM:-/usr/bin/chromium}" || { echo "error: chromium not found; the dashboard's browser test drives Debian's chromium (apt-get install chromium)" >&2; exit 1; }

run: venv check-tools
	$(PY) -m infra.localcloud run

up: venv check-tools
	$(PY) -m infra.localcloud up

down:
	@if [ -x $(PY) ]; then $(PY) -m infra.localcloud down; else echo "local cloud not set up"; fi

status: venv
	$(PY) -m infra.localcloud status

test: venv check-tools check-browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: venv check-tools
	$(PY) -m tests.bench.run $(BENCH_ARGS)

fuzz: venv check-tools
	$(PY) -m tests.fuzz.run $(FUZZ_ARGS)

# Fault scenarios against a local cloud the run starts itself (stop `make up`'s first); table and .chaos/results.json
chaos: venv check-tools
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

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
	rm -rf $(VENV) .localcloud .pytest_cache .mypy_cache .ruff_cache .bench .fuzz .chaos .artifacts $(APIDOCS)/node_modules $(DASHBOARD)/node_modules
