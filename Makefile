# Two commands: `make run` serves the tip line on http://127.0.0.1:8000, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean

# `make run` installs the tip line alone; `make test` and `make lint` add the tools they need.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/tipline init
	TIPLINE_SANDBOX=$${TIPLINE_SANDBOX:-1} $(BIN)/tipline serve

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: $(DEV_STAMP)
	$(BIN)/pytest

# Lint and format (ruff), strict types (mypy), layer contracts (import-linter), complexity at most C (radon).
lint: $(DEV_STAMP)
	$(BIN)/ruff check tipline adapters webhooks tests bench
	$(BIN)/ruff format --check tipline adapters webhooks tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	@too_complex="$$($(BIN)/radon cc --min D --show-complexity tipline adapters webhooks)"; \
	  if [ -n "$$too_complex" ]; then echo "functions above complexity C:"; echo "$$too_complex"; exit 1; fi

bench: $(DEV_STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/console_list.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/media.py
	$(BIN)/python bench/isolation.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
