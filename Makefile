# Two commands do all set-up on a fresh machine: `make run` (the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml Makefile scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llmrerank serve --preset enterprise --port $${PORT:-8000}

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check core langchain_llmrerank llamaindex_llmrerank tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV)
