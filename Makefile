# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/cloudpilot: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: demo test lint typecheck bench simulator clean
demo: $(BIN)/cloudpilot
	$(BIN)/cloudpilot demo

simulator: $(BIN)/cloudpilot
	$(BIN)/cloudpilot simulator

lint: $(BIN)/cloudpilot
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/cloudpilot
	$(BIN)/mypy

# The metrics and deploy-kit tests run `promtool` and `amtool`, and the alerting tests a real
# Alertmanager; on a clean Debian/Ubuntu machine (CI) they come from the `prometheus` and
# `prometheus-alertmanager` packages, installed when missing.
test: lint typecheck
	$(BIN)/cloudpilot check rules/
	.ci/ensure-packages promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
		amtool:prometheus-alertmanager
	$(BIN)/pytest

bench: $(BIN)/cloudpilot
	$(BIN)/python -m bench.simulator
	$(BIN)/python -m bench.client_sweep
	$(BIN)/python -m bench.listing
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.daemon
	$(BIN)/python -m bench.cpu_history
	$(BIN)/python -m bench.scrape

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
