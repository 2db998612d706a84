# Two commands: `make run` serves the tip line on http://127.0.0.1:8000, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tipline init
	TIPLINE_SANDBOX=$${TIPLINE_SANDBOX:-1} $(BIN)/tipline serve

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/console_list.py
	$(BIN)/python bench/media.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
