# The two commands of the README's quick start, and what they need.
#   make demo   set up a virtual environment and open JupyterLab on the demo notebook
#   make test   set up the same environment and run every check: ruff, mypy and the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Jupyter refuses to run as root unless told; CI and containers run as root.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: install demo test lint typecheck pytest bench bench-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	cd notebooks && $(abspath $(BIN))/jupyter lab $(ROOT_FLAG) demo.ipynb

lint: install
	$(BIN)/ruff check jupyter_sse tests bench
	$(BIN)/ruff format --check jupyter_sse tests bench
	cd labextension && ([ -d node_modules ] || npm ci --no-audit --no-fund) && npm run typecheck && npm run lint && npm run build:lib && npm test

typecheck: install
	$(BIN)/mypy

pytest: install
	scripts/ensure-chromium
	scripts/ensure-redis
	scripts/ensure-nginx
	$(BIN)/python -m pytest

# The benchmarks (bench/README.md): the full run writes bench/results/; CI runs the short smoke version so they
# cannot rot (it fails only if a benchmark breaks, not on a missed target).
bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --quick

test: lint typecheck pytest bench-smoke
