"""Scenario presets: what each latency budget buys and what it gives up.

=========== ======== ============================ ==============================================
preset      deadline k (LLM window)              trades
=========== ======== ============================ ==============================================
realtime    0.5 s    budget-aware, 3..20          Relevance for latency: the LLM scores only what
                                                  the latency estimate says fits in the budget;
                                                  fused only from a depth of 16 (a fast server);
                                                  on the CPU default, the fast order.
enterprise  2.5 s    20, 8 in flight              The funnel proper: the fast stage (retriever +
                                                  BM25) narrows, the LLM scores the top 20
                                                  concurrently; fused with the fast score.
research    10 s     50, 16 in flight, streamed   Latency for relevance: a deep LLM window;
                                                  stream it to show the fast ranking while it
                                                  works.
=========== ======== ============================ ==============================================

The fast stage is the default :class:`~llmrerank.scorers.retriever_fusion.RetrieverFusionScorer`
(the retriever's ranking fused with BM25 over the candidates), and the LLM is fused against that
fused fast score, measured by ``llmrerank bench fusion`` on cranfield, cisi and nfcorpus under a
BM25 and a dense retriever (docs/benchmarks/fusion_depth.md, the embedded model's query
likelihood, 50 queries per run): only once the LLM has answered the top 16 of the fast order
(``Fusion(min_depth=16)``; shallower, the fast order stands), at w=0.5 (realtime, enterprise;
mean nDCG@10 +0.016 at depth 16 to +0.017 at 20 over the fast stage alone, tune and eval
pooled, no run below it) and 0.6 (research, deeper than measured). An answered window of 3 to 10
moved nDCG@10 by at most +0.005 on average, with eval runs up to 0.016 below the fast stage. When
the latency estimate says the LLM cannot answer 16 before the deadline, it is not called. Another LLM may earn another weight or depth: pass
``fusion=Fusion(llm_weight=..., min_depth=...)`` and measure it with ``llmrerank bench fusion``.

Every preset runs the embedded default LLM on the first 256 tokens of each text. A preset can
read fewer (``Preset.llm_text_tokens``, e.g. ``PRESETS["enterprise"].with_(llm_text_tokens=128)``):
each text scores about 2x faster, so a deadline preset scores more of its window on a slow CPU,
but the 128-token cut was measured and not adopted (docs/benchmarks/llm_text_cut.md and
docs/benchmarks/drop_in.md, "Text cut"): fused as enterprise ranks, nDCG@10 moved by -0.018 /
+0.004 / -0.008 on cranfield / cisi / nfcorpus (30 queries, seed 0; seed 1: +0.003 / +0.000 /
+0.006), and without a deadline it ranked below the 256-token cut in two of three drop-in runs.
96 and 64 tokens lost 0.011-0.052.

Every preset keeps the same guarantees: a complete ranking by the deadline (plus a few ms), every
candidate exactly once, degradation flagged in provenance.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError
from .scoring import Fusion

if TYPE_CHECKING:
    from .funnel import Funnel
    from .scorers.base import Scorer
    from .scorers.llm_local import LocalLLMScorer

__all__ = [
    "PRESETS",
    "Preset",
    "default_llm_scorer",
    "get_preset",
    "is_default_llm",
    "reset_default_llm",
]


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    deadline: float | None
    k: int | None
    k_min: int
    k_max: int
    concurrency: int
    fusion: Fusion
    description: str
    extra: dict[str, Any] = field(default_factory=dict)
    llm_text_tokens: int | None = None
    """How many tokens of each text the embedded default LLM reads under this preset (``None``:
    the scorer's own default, 256). Used only when the preset builds its own LLM
    (``llm="default"``); a scorer you pass keeps its settings."""

    def default_llm(self) -> Scorer:
        """The embedded default LLM as this preset runs it (its text cut applied); every preset's
        variant shares one loaded model (:func:`default_llm_scorer`)."""
        return default_llm_scorer(self.llm_text_tokens)

    def build(
        self,
        *,
        llm: Scorer | Literal["default"] | None = "default",
        fast: Scorer | None = None,
        **overrides: Any,
    ) -> Funnel:
        """A :class:`Funnel` with this preset's settings; ``overrides`` replace any of them."""
        from .funnel import Funnel

        settings: dict[str, Any] = {
            "k": self.k,
            "k_min": self.k_min,
            "k_max": self.k_max,
            "deadline": self.deadline,
            "concurrency": self.concurrency,
            "fusion": self.fusion,
            "name": self.name,
        }
        unknown = (
            set(overrides)
            - set(settings)
            - {
                "cache",
                "breaker",
                "max_text_chars",
                "input_ranked",
                "instruction",
            }
        )
        if unknown:
            raise ConfigError(
                f"unknown Funnel setting(s) for preset {self.name!r}: {sorted(unknown)}"
            )
        settings.update(overrides)
        scorer = self.default_llm() if llm == "default" else llm
        return Funnel(fast=fast, llm=scorer, **settings)

    def with_(self, **changes: Any) -> Preset:
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "realtime": Preset(
        name="realtime",
        deadline=0.5,
        k=None,
        k_min=3,
        k_max=20,
        concurrency=4,
        fusion=Fusion("interpolate", llm_weight=0.5, min_depth=16),
        description="< 500 ms: budget-aware k, fast-stage order wherever the LLM runs out of time",
    ),
    "enterprise": Preset(
        name="enterprise",
        deadline=2.5,
        k=20,
        k_min=5,
        k_max=20,
        concurrency=8,
        fusion=Fusion("interpolate", llm_weight=0.5, min_depth=16),
        description="< 3 s: funnel to the top 20, scored concurrently, fused with the fast stage",
    ),
    "research": Preset(
        name="research",
        deadline=10.0,
        k=50,
        k_min=10,
        k_max=50,
        concurrency=16,
        fusion=Fusion("interpolate", llm_weight=0.6, min_depth=16),
        description="5-10 s: deep LLM window, meant to be streamed",
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def default_llm_scorer(text_tokens: int | None = None) -> Scorer:
    """The embedded CPU default: SmolLM2-135M-Instruct via transformers (``llmrerank[local]``),
    reading the first ``text_tokens`` tokens of each text (``None``: its default, 256).

    One shared instance per process and cut, and one loaded model behind all of them
    (:meth:`~llmrerank.scorers.llm_local.LocalLLMScorer.variant`), so every preset, adapter and
    server reuses one model whichever preset loads it first.
    """
    scorer = _shared_llm(text_tokens)
    _DEFAULTS.add(scorer)
    return scorer


@lru_cache(maxsize=8)
def _shared_llm(text_tokens: int | None) -> LocalLLMScorer:
    from .scorers.llm_local import LocalLLMScorer

    if text_tokens is None:
        return LocalLLMScorer()
    base = _shared_llm(None)
    if text_tokens == base.max_text_tokens:
        return base
    return base.variant(max_text_tokens=text_tokens)


def reset_default_llm() -> None:
    """Forget the shared embedded scorers (tests; the next call builds them anew)."""
    _shared_llm.cache_clear()


_DEFAULTS: weakref.WeakSet[LocalLLMScorer] = weakref.WeakSet()


def is_default_llm(scorer: object) -> bool:
    """Whether ``scorer`` is the embedded default (as some preset runs it): a funnel built on it
    for another preset should run that preset's own variant (:meth:`Preset.default_llm`)."""
    return scorer in _DEFAULTS
