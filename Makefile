# Quickstart: `make demo` computes every demo report through Dagster; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)

# Most slow tests wait on servers and runs, not on the CPU: three workers share two CPUs well.
TEST_WORKERS ?= 3

.PHONY: install demo serve test test-fast lint format ui stack bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/precompute demo

# The report service and the admin pages (/admin) on the demo's store (README, "For space
# admins"): `make demo` prints a key of tenant t1; more with `.venv/bin/precompute keys create
# --tenant t1`. Refreshes and actions need `make ui` running too.
# `make serve SERVE_ARGS="--workers 2"`.
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/precompute serve $(SERVE_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The quick tests only, in under a minute: no servers, no killed processes, no long rounds.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml

# The production-shaped stack on this machine (docs/deploy.md), in the foreground until Ctrl-C:
# PostgreSQL instance and data, Redis, webserver and daemon. `make stack STACK_ARGS="--port 3001"`.
STACK_ARGS ?=
stack: $(STAMP)
	$(BIN)/python deploy/stack.py $(STACK_ARGS)

# `make bench` on SQLite; `make bench BENCH_URL=postgresql+psycopg2://...` on PostgreSQL. Either
# writes its JSON, then the README's results section is regenerated from every JSON present.
BENCH_URL ?=
BENCH_OUT := bench/results$(if $(BENCH_URL),-postgresql).json
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(BENCH_URL),--url '$(BENCH_URL)') --out $(BENCH_OUT)
	$(BIN)/python bench/readme_table.py $$(ls bench/results.json bench/results-postgresql.json 2>/dev/null)

clean:
	rm -rf .precompute .stack storage history schedules logs .logs_queue .nux .telemetry
