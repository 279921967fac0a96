# Two commands: `make demo` (train + evaluate) and `make test`. Each sets up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint
setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(VENV)/bin/ruff check edgead tests scripts
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check edgead tests scripts
