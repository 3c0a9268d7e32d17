# Entry points: `make demo` (install + run the demo), `make test` (every tier)
# and `make test-fast` (tests/unit only, seconds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers for `make test`. Three on CI's 2 cores: most e2e time is spent
# waiting on subprocesses and poll intervals, so a third worker fills the idle core time
# (2-core host: 321 s with 2, 281 s with 3; 209 s with 3 since the e2e sites install
# in-process). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3

.PHONY: install demo test test-fast bench clean

# The product and its test doubles (sim/, the [sim] extra), both editable.
$(BIN)/globus-staging: setup.cfg pyproject.toml sim/setup.cfg sim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./sim -e '.[test,sim]'
	touch $@

install: $(BIN)/globus-staging

demo: install
	$(BIN)/globus-staging demo

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

bench: install
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info lib/*.egg-info sim/build sim/lib/*.egg-info
