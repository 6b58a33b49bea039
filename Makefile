# agentrt — the project's verbs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q agentrt  # (bytecode for every process the tests start)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check agentrt tests benchmarks examples
	$(BIN)/ruff format --check agentrt tests benchmarks examples
	$(BIN)/mypy

demo: install
	$(BIN)/agentrt supervise examples/literature_review/config.toml --output out/results.json --trace out/trace.json
	$(BIN)/agentrt trace out/trace.json --png out/trace.png
	@echo "report: out/literature_review.md  results: out/results.json  timeline: out/trace.json, out/trace.png"

bench: install
	$(BIN)/python -m pip install -q -e '.[dev,bench]' || echo "peers (loky, pebble, ray) not installed: they are skipped"
	$(BIN)/agentrt bench --json out --png out/bench.png
	$(BIN)/python benchmarks/report.py --out out --readme README.md

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache
