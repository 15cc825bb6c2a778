# Warden: `make run` starts the gateway on the embedded defaults, `make test` runs the tests.
# Both set everything up from nothing: Python 3.12 venv, pinned dependencies, CA and keys.

SHELL := /bin/bash
PY_VERSION := $(shell cat .python-version 2>/dev/null || echo 3.12.1)
# python3.12 on PATH, else pyenv's 3.12 (the machine default may be another version), else nothing.
PYTHON ?= $(shell command -v python3.12 2>/dev/null \
	|| PYENV_VERSION=$(PY_VERSION) pyenv which python3.12 2>/dev/null \
	|| ls $(HOME)/.pyenv/versions/$(PY_VERSION)/bin/python3.12 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= 127.0.0.1
PORT ?= 8080
ADMIN ?= 127.0.0.1:8081
GATEWAY = $(BIN)/mitmdump -s addons/gateway.py --listen-host $(LISTEN) --set flow_detail=0 \
	--set confdir=certs --set warden_rules=rules/default.yaml \
	--set warden_db=data/warden.duckdb --set warden_admin=$(ADMIN) \
	--set ssl_verify_upstream_trusted_ca=certs/upstream-trust.pem

.PHONY: run test check bench bench-evidence leakbench demo setup setup-now check-python clean browser

run: setup  ## start the gateway on 127.0.0.1:8080, admin API on 127.0.0.1:8081
	$(GATEWAY) --mode regular@$(PORT) --mode reverse:https://localhost:9443@8090

demo: setup  ## the offline demo upstream (OpenAI/Anthropic-shaped) on https://localhost:9443
	$(BIN)/python -m scripts.demo_upstream --host 127.0.0.1 --port 9443 \
		--tls-cert certs/demo-upstream.pem --tls-key certs/demo-upstream.key

test: setup browser  ## the whole suite: unit tests and end-to-end tests through a real mitmdump
	$(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

check: setup  ## lint (ruff) and type check (mypy), configured in pyproject.toml; CI runs it before the tests
	$(BIN)/ruff check addons scripts tests
	$(BIN)/mypy

bench: setup  ## throughput and added latency: direct vs bare mitmdump vs the Warden chain; then PII masking's cost
	$(BIN)/python -m scripts.bench
	$(BIN)/python -m scripts.bench_pii

bench-evidence: setup  ## evidence on 1,000,000 recorded flows: verify, search, packs; stopped and under load
	$(BIN)/python -m scripts.bench_evidence $(BENCH_ARGS)

LEAKBENCH_VENV := .leakbench-venv
LEAKBENCH_STAMP := $(LEAKBENCH_VENV)/.installed

leakbench: setup $(LEAKBENCH_STAMP)  ## the external pii-leak-benchmark (v1 selfcheck profiles and v2) through Warden
	$(BIN)/python -m scripts.leakbench --venv $(LEAKBENCH_VENV) $(LEAKBENCH_ARGS)

# The benchmark in a venv of its own, pinned by version and hash: it is not a dependency of Warden.
$(LEAKBENCH_STAMP): scripts/leakbench-requirements.txt | check-python
	rm -rf $(LEAKBENCH_VENV)
	$(PYTHON) -m venv $(LEAKBENCH_VENV)
	$(LEAKBENCH_VENV)/bin/python -m pip install --quiet --require-hashes -r scripts/leakbench-requirements.txt
	touch $@

# One set-up at a time: `make run` in one terminal and `make demo` in another must not both build
# the venv or the CA (the second waits for the first, then finds everything in place).
setup:
	@if command -v flock >/dev/null; then \
		flock -n .setup.lock true || echo "another make is setting up Warden; waiting for it to finish..."; \
		flock .setup.lock $(MAKE) --no-print-directory setup-now; \
	else $(MAKE) --no-print-directory setup-now; fi

setup-now: $(STAMP) certs/upstream-trust.pem

check-python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: Python $(PY_VERSION) not found. Install it (pyenv install $(PY_VERSION)) or run make PYTHON=/path/to/python3.12" >&2; \
		exit 1; \
	fi
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' 2>/dev/null || { \
		echo "error: $(PYTHON) is not Python 3.12 (mitmproxy 12 needs it)" >&2; exit 1; }

$(STAMP): requirements.lock pyproject.toml | check-python
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

certs/upstream-trust.pem: $(STAMP) scripts/setup_certs.py
	$(BIN)/python -m scripts.setup_certs certs

# Tests open the evidence report and mitmweb in a real headless browser: Debian's chromium (never `playwright install`).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the browser tests (apt-get)..."; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q >/dev/null && \
		     $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	fi

clean:
	rm -rf $(VENV) $(LEAKBENCH_VENV) .pytest_cache .setup.lock
