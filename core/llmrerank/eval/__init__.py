"""Benchmarks on relevance-judged data: quality and speed of every arm, measured in one run.

- :mod:`.data`: read a BEIR-layout collection (``corpus.jsonl``, ``queries.jsonl``,
  ``qrels/test.tsv``) in place;
- :mod:`.retrieval`: BM25 over the whole corpus gives every query its top-N candidates;
- :mod:`.arms`: the rankers compared (BM25, dense, hybrid, the naive generating reranker,
  LlamaIndex ``LLMRerank``, LangChain ``LLMChainFilter``, llmrerank's LLM-only and funnels);
- :mod:`.metrics`: nDCG, MRR, recall (ranx) and latency percentiles;
- :mod:`.runner` and :mod:`.report`: run them and write JSON, Markdown and a PNG plot.

Needs ``llmrerank[bench]``; the model arms need ``[local]``, ``[dense]``, ``[llamaindex]``,
``[langchain]``. Command line: ``llmrerank bench --dataset DIR``.
"""

from .data import Dataset, Document, default_data_dir, load_beir
from .metrics import evaluate_rankings, latency_summary
from .runner import ARM_NAMES, BenchConfig, arun_benchmark, run_benchmark

__all__ = [
    "ARM_NAMES",
    "BenchConfig",
    "Dataset",
    "Document",
    "arun_benchmark",
    "default_data_dir",
    "evaluate_rankings",
    "latency_summary",
    "load_beir",
    "run_benchmark",
]
