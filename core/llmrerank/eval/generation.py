"""Text generation with the embedded model, for the baselines that generate answers.

The naive reranker and the framework rerankers (LlamaIndex ``LLMRerank``, LangChain
``LLMChainFilter``) ask a model to *write* an answer and parse it. They are driven here by the
same local SmolLM2 that llmrerank scores with, through transformers ``generate`` (greedy, a
bounded number of new tokens), so every arm pays for the same model on the same machine.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._optional import require

__all__ = ["GenerationStats", "LocalGenerator", "parse_score"]


@dataclass
class GenerationStats:
    """Counters a benchmark reads before and after each query."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def snapshot(self) -> GenerationStats:
        return GenerationStats(self.calls, self.prompt_tokens, self.completion_tokens, self.seconds)

    def since(self, before: GenerationStats) -> GenerationStats:
        return GenerationStats(
            self.calls - before.calls,
            self.prompt_tokens - before.prompt_tokens,
            self.completion_tokens - before.completion_tokens,
            self.seconds - before.seconds,
        )


class LocalGenerator:
    """Greedy generation with a local causal LM, one prompt at a time.

    A lock serialises calls: one CPU model computes one generation at a time, whichever framework
    asks (LangChain's ``batch`` would otherwise start several in threads that fight for the cores).

    Args:
        model_dir: a transformers model directory (default: the embedded SmolLM2-135M-Instruct).
        max_new_tokens: the cap on generated tokens per call.
        chat: wrap prompts in the model's chat template (what an instruct model expects).
        threads: torch intra-op threads, set before each call (a process-wide torch setting, as
            the embedded LLM scorer sets it too); ``None`` leaves torch's setting alone.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_new_tokens: int = 64,
        chat: bool = True,
        threads: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.max_new_tokens = max_new_tokens
        self.chat = chat
        self.stats = GenerationStats()
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def name(self) -> str:
        return Path(str(self.model_dir or "smollm2-135m-instruct")).name

    def load(self) -> None:
        """Load the model now (otherwise on the first call)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        transformers = require("transformers", extra="local", feature="the generating baselines")
        torch = require("torch", extra="local", feature="the generating baselines")
        if self.model_dir is None:
            from ..models import smollm2_path

            self.model_dir = smollm2_path()
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(self.model_dir), dtype=torch.float32
        )
        model.eval()
        self._model = model

    def count_tokens(self, text: str) -> int:
        with self._lock:
            self._load_locked()
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompt: str, *, max_new_tokens: int | None = None) -> str:
        """The model's greedy continuation of ``prompt`` (special tokens removed)."""
        torch = require("torch", extra="local", feature="the generating baselines")
        limit = max_new_tokens or self.max_new_tokens
        with self._lock:
            self._load_locked()
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            t0 = time.perf_counter()
            tok = self._tokenizer
            if self.chat and getattr(tok, "chat_template", None):
                inputs = tok.apply_chat_template(
                    [{"role": "user", "content": prompt}],
                    add_generation_prompt=True,
                    return_tensors="pt",
                    return_dict=True,
                )
            else:
                inputs = tok(prompt, return_tensors="pt")
            n_in = int(inputs["input_ids"].shape[1])
            with torch.inference_mode():
                out = self._model.generate(
                    **inputs,
                    max_new_tokens=limit,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
            new = out[0][n_in:]
            text = str(tok.decode(new, skip_special_tokens=True))
            self.stats.calls += 1
            self.stats.prompt_tokens += n_in
            self.stats.completion_tokens += len(new)
            self.stats.seconds += time.perf_counter() - t0
            return text


_SCORE_PATTERNS = (
    re.compile(r"score\W{0,3}(?:is|of|=)?\W{0,3}(\d{1,2}(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d{1,2}(?:\.\d+)?)\s*(?:/|out of)\s*10", re.IGNORECASE),
)


def parse_score(answer: str, *, low: float = 1.0, high: float = 10.0) -> float | None:
    """The relevance score in a generated answer: the last ``Score: N`` or ``N/10``, else
    ``None``. Values outside ``[low, high]`` count as unparsable."""
    for pattern in _SCORE_PATTERNS:
        found = pattern.findall(answer)
        if found:
            value = float(found[-1])
            return value if low <= value <= high else None
    return None
