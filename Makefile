# openmaac: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# four test processes on two cores: each runs its own server and database (tests/conftest.py);
# most tests wait on sockets, browsers and workers, so four finish sooner than two (docs/decisions.md)
PYTEST_ARGS ?= -n 4

.PHONY: install run test test-sqlite test-postgres lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "openmaac needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: the server on http://127.0.0.1:8000 with SQLite under ./data, the embedded
## worker and the simulators; prints the default organisation's token.
run: $(STAMP)
	$(BIN)/openmaac serve --host 127.0.0.1 --port 8000

## make test: the whole suite on SQLite, then again on PostgreSQL when
## OPENMAAC_TEST_DATABASE_URL names a server (.ci/run sets it up).
test: $(STAMP)
	$(MAKE) --no-print-directory test-sqlite
	@if [ -n "$$OPENMAAC_TEST_DATABASE_URL" ]; then \
		$(MAKE) --no-print-directory test-postgres; \
	else \
		echo "OPENMAAC_TEST_DATABASE_URL not set: PostgreSQL run skipped"; \
	fi

test-sqlite: $(STAMP)
	env -u OPENMAAC_TEST_DATABASE_URL -u OPENMAAC_DATABASE_URL $(BIN)/pytest -q $(PYTEST_ARGS)

test-postgres: $(STAMP)
	env -u OPENMAAC_DATABASE_URL $(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
