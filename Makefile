# The two commands of the README: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint services bench clean

$(STAMP): pyproject.toml
	@bash .ci/system-deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# bytecode, as a non-editable install has it (PYTHONDONTWRITEBYTECODE=1 would recompile every run)
	$(BIN)/python -m compileall -q backupctl spark_jobs
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backupctl demo

services:
	@bash .ci/services.sh

test: $(STAMP) services
	$(BIN)/python -m pytest tests -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP) services
	$(BIN)/python -m pytest tests/integration -q

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard backupctl spark_jobs tests bench)
	$(BIN)/mypy backupctl bench

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@# dynamodump pins an old boto3: it gets a venv of its own so .venv stays as tested.
	@test -x .venv-peers/bin/dynamodump || ($(PY) -m venv .venv-peers && .venv-peers/bin/pip install --quiet dynamodump)
	$(BIN)/python bench/dynamodb.py --dynamodump .venv-peers/bin/dynamodump

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
