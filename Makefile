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

typecheck: $(BIN)/cloudpilot
	$(BIN)/mypy

# The metrics test runs `promtool check metrics`; on a clean Debian/Ubuntu machine (CI) it comes
# from the `prometheus` package. A policy-rc.d that answers 101 keeps the package's postinst from
# starting a Prometheus server (one already present, as in Docker images, is left alone).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0

test: lint typecheck
	@command -v promtool >/dev/null || { \
	  echo "promtool not found: installing the prometheus package"; \
	  policy=/usr/sbin/policy-rc.d; ours=; \
	  if [ ! -e $$policy ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && \
	    $(SUDO) chmod 755 $$policy && ours=1; \
	  fi; \
	  $(APT_GET) install --no-install-recommends prometheus || \
	    { $(APT_GET) update && $(APT_GET) install --no-install-recommends prometheus; }; \
	  status=$$?; \
	  if [ -n "$$ours" ]; then $(SUDO) rm -f $$policy; fi; \
	  exit $$status; \
	}
	$(BIN)/pytest

bench: $(BIN)/cloudpilot
	$(BIN)/python -m bench.simulator
	$(BIN)/python -m bench.client_sweep
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.daemon

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
