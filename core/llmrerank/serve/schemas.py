"""The HTTP API's request models and the JSON it answers with.

The request is the rerank format that Cohere, Jina, vLLM and others share (``query``,
``documents``, ``top_n``, ``return_documents``), so their clients can call llmrerank unchanged;
llmrerank's own knobs (``preset``, ``deadline``, ``k``) are optional extras. Each result carries
the shared fields (``index``, ``relevance_score``, ``document``) and llmrerank's provenance.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..calibration import relevance_scores
from ..types import Ranking, ScoredCandidate

__all__ = [
    "CohereV2RerankRequest",
    "DemoSearchRequest",
    "RerankRequest",
    "TEIRerankRequest",
    "cohere_v2_body",
    "dumps",
    "ranking_body",
    "tei_body",
]


class _Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="realtime, enterprise or research")
    deadline: float | None = Field(None, gt=0, description="Seconds for this request")
    k: int | None = Field(None, ge=0, description="How many candidates the LLM scores")
    input_ranked: bool | None = Field(
        None,
        description="Whether the documents come in their retriever's ranking, best first "
        "(default true: the fast stage fuses that order with BM25); false when the order "
        "carries no meaning",
    )
    instruction: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="Task instruction for LLM profiles that take one (e.g. Qwen3-Reranker)",
    )


class RerankRequest(_Knobs):
    """``POST /v1/rerank`` and ``/v1/rerank/stream``."""

    query: StrictStr
    documents: list[StrictStr | dict[str, Any]] = Field(
        description="Texts, or objects with a 'text' field (or the fields named in rank_fields)"
    )
    top_n: int | None = Field(None, ge=1, description="Return only the best top_n results")
    return_documents: bool = True
    rank_fields: list[StrictStr] | None = Field(
        None, description="For object documents: the fields whose values make the text"
    )
    model: str | None = Field(None, description="Accepted for compatibility; echoed back")
    max_chunks_per_doc: int | None = Field(None, description="Accepted for compatibility; unused")
    max_tokens_per_doc: int | None = Field(None, description="Accepted for compatibility; unused")

    def texts(self) -> list[str]:
        """Each document's text; raises ValueError naming the first unusable document."""
        out: list[str] = []
        for i, doc in enumerate(self.documents):
            if isinstance(doc, str):
                out.append(doc)
                continue
            fields = self.rank_fields or ["text"]
            missing = [f for f in fields if f not in doc]
            if missing:
                raise ValueError(
                    f"documents[{i}] is an object without the field(s) {missing}; give each "
                    "document as a string or an object with a 'text' field (or set rank_fields)"
                )
            values = [doc[f] for f in fields]
            bad = [f for f, v in zip(fields, values, strict=True) if not isinstance(v, str)]
            if bad:
                raise ValueError(f"documents[{i}].{bad[0]} must be a string")
            out.append(
                values[0]
                if len(fields) == 1
                else "\n".join(f"{f}: {v}" for f, v in zip(fields, values, strict=True))
            )
        return out


class CohereV2RerankRequest(_Knobs):
    """``POST /v2/rerank``: Cohere's v2 request (documents are strings)."""

    model: str | None = Field(None, description="Accepted for compatibility; echoed back")
    query: StrictStr
    documents: list[StrictStr]
    top_n: int | None = Field(None, ge=1, description="Return only the best top_n results")
    max_tokens_per_doc: int | None = Field(None, description="Accepted for compatibility; unused")
    priority: int | None = Field(None, description="Accepted for compatibility; unused")

    def texts(self) -> list[str]:
        return list(self.documents)


class TEIRerankRequest(_Knobs):
    """``POST /rerank``: Hugging Face text-embeddings-inference's request."""

    query: StrictStr
    texts: list[StrictStr]
    raw_scores: bool = Field(
        False, description="true: each score is llmrerank's raw fused score, not [0, 1]"
    )
    return_text: bool = False
    truncate: bool | None = Field(None, description="Accepted for compatibility; unused")
    truncation_direction: str | None = Field(None, description="Accepted; unused")


class DemoSearchRequest(_Knobs):
    """``POST /v1/demo/search`` and ``/v1/demo/search/stream``: search the demo corpus."""

    query: StrictStr
    top_n: int = Field(10, ge=1, le=100)


def _index(r: ScoredCandidate) -> int:
    return int(r.candidate.metadata.get("index", r.rank))


def result_body(
    r: ScoredCandidate, document: Any | None, *, return_documents: bool, relevance: float
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index": _index(r),
        "relevance_score": relevance,
        "stage": r.stage,
        "scores": {"fused": r.score, "fast": r.fast_score, "llm": r.llm_score},
        "cached": r.cached,
    }
    if return_documents:
        body["document"] = document if isinstance(document, dict) else {"text": r.candidate.text}
    return body


def ranking_body(
    ranking: Ranking,
    documents: list[Any],
    *,
    top_n: int | None,
    return_documents: bool,
    model: str,
    request_id: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response body for ``ranking`` (also each stream event's data)."""
    shown = ranking.results[:top_n] if top_n is not None else ranking.results
    probs = relevance_scores(ranking)
    results = []
    for r, p in zip(shown, probs, strict=False):
        index = _index(r)
        results.append(
            result_body(
                r,
                documents[index] if index < len(documents) else None,
                return_documents=return_documents,
                relevance=p,
            )
        )
    return {
        "id": request_id,
        "model": model,
        "results": results,
        "llmrerank": {**ranking.provenance(), **(extra or {})},
    }


def cohere_v2_body(
    ranking: Ranking, *, top_n: int | None, request_id: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Cohere v2's answer: ``id``, ``results[{index, relevance_score}]``, ``meta``; the raw
    scores and provenance under ``llmrerank`` (clients ignore unknown fields)."""
    shown = ranking.results[:top_n] if top_n is not None else ranking.results
    probs = relevance_scores(ranking)
    return {
        "id": request_id,
        "results": [
            {"index": _index(r), "relevance_score": p} for r, p in zip(shown, probs, strict=False)
        ],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        "llmrerank": {
            **ranking.provenance(),
            **extra,
            "results": [
                {"index": _index(r), "stage": r.stage, "score": r.score, "cached": r.cached}
                for r in shown
            ],
        },
    }


def tei_body(ranking: Ranking, texts: list[str], *, raw_scores: bool, return_text: bool) -> Any:
    """TEI's answer: a JSON list of ``{index, score[, text]}``, best first. ``score`` is the
    [0, 1] relevance score, or the raw fused score with ``raw_scores``."""
    probs = relevance_scores(ranking)
    out = []
    for r, p in zip(ranking.results, probs, strict=True):
        item: dict[str, Any] = {"index": _index(r), "score": r.score if raw_scores else p}
        if return_text:
            item["text"] = texts[_index(r)]
        out.append(item)
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(body: Any) -> str:
    """JSON for a response. Lone surrogates (valid in JSON input, not in UTF-8) are escaped;
    a non-finite number (never expected) becomes null rather than invalid JSON."""
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        body = _finite(body)
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(body, ensure_ascii=True, allow_nan=False, default=str)
    return text
