# The README's two commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint bench schema clean system-deps-demo system-deps-test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps-demo:
	./scripts/install-system-deps.sh demo

system-deps-test:
	./scripts/install-system-deps.sh test

# The main job on the embedded default: the libvirt test driver, no daemon.
demo: system-deps-demo $(STAMP)
	$(BIN)/python scripts/demo.py

# The whole suite: installs packages, starts its own libvirtd test hosts,
# prints how long each area took against its budget.
test: system-deps-test $(STAMP)
	$(BIN)/python scripts/run_tests.py

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/integration -q

lint: $(STAMP)
	$(BIN)/ruff check controller tests scripts
	$(BIN)/ruff format --check controller tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pytest tests/bench -m bench -s -q -p no:cacheprovider

schema: $(STAMP)
	$(BIN)/virtsync schema

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
