# Conveniences; the README's commands are ./run demo and ./run test (no make needed).
BIN := .venv/bin

.PHONY: demo test lint bench bench-peers schema soak clean

demo:
	./run demo

test:
	./run test

lint:
	$(BIN)/ruff check controller tests scripts
	$(BIN)/mypy

bench:
	$(BIN)/python -m pytest tests/bench -m bench -s -q -p no:cacheprovider

# virtsync beside Ansible's community.libvirt and raw libvirt calls (downloads Ansible into a venv
# under ~/.cache/virtsync-tests/: not part of `make bench` or CI).
bench-peers:
	$(BIN)/python -m pytest tests/bench/peers_bench.py -m bench -s -q -p no:cacheprovider

schema:
	$(BIN)/virtsync schema

# The service's chaos soak for 30 minutes (CI runs 3 of it in the reliability area).
soak:
	VIRTSYNC_SOAK_MINUTES=30 $(BIN)/python -m pytest tests/e2e/test_chaos_soak.py -m reliability -s -q -p no:cacheprovider --timeout 2400

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache artifacts
