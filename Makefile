# The two commands of the README's quick start, and what they need.
#   make demo   set up a virtual environment and open JupyterLab on the demo notebook
#   make test   set up the same environment and run every check: ruff, mypy, eslint, prettier, stylelint and the
#               test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Jupyter refuses to run as root unless told; CI and containers run as root.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: install install-integrations demo test lint typecheck pytest bench bench-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The libraries whose bars the capture tests drive (torch CPU, transformers, keras, lightning...): about 1.3 GB,
# so only the tests install them, not the demo. torch's pin is in the same pip command as everything else, or
# a later resolve could pull a CUDA build.
$(VENV)/.integrations: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,integrations]"
	touch $@

install: $(VENV)/.installed

install-integrations: $(VENV)/.integrations

demo: install
	cd notebooks && $(abspath $(BIN))/jupyter lab $(ROOT_FLAG) demo.ipynb

lint: install
	$(BIN)/ruff check jupyter_sse tests bench
	$(BIN)/ruff format --check jupyter_sse tests bench
	# npm ci again when package-lock.json changed since node_modules was made (a new linter, say)
	cd labextension && ([ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund) \
		&& npm run typecheck && npm run lint && npm run build:lib && npm test

typecheck: install
	$(BIN)/mypy

pytest: install-integrations
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
