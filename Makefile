# Conveniences; the README's commands are ./run demo and ./run test (no make needed).
BIN := .venv/bin

.PHONY: demo test lint bench schema clean

demo:
	./run demo

test:
	./run test

lint:
	$(BIN)/ruff check controller tests scripts
	$(BIN)/mypy

bench:
	$(BIN)/python -m pytest tests/bench -m bench -s -q -p no:cacheprovider

schema:
	$(BIN)/virtsync schema

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache artifacts
