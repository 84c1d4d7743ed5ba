"""DenseScorer mechanics on a tiny (untrained) bi-encoder built by conftest.py; the real
all-MiniLM-L6-v2 is exercised in tests/integration/fast_stages (slow)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from llmrerank import Candidate, Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import ConfigError, InputError
from llmrerank.scorers import DenseScorer, PrecomputedEmbeddings

TEXTS = ["apple river", "castle violin planet", "forest bridge", "coffee"]


async def test_cosine_scores_and_the_query_itself_scores_one(tiny_bi_encoder: Path) -> None:
    scorer = DenseScorer(tiny_bi_encoder, batch_size=2)
    scores = await scorer.ascore("castle violin planet", TEXTS, deadline=Deadline.after(30))
    assert all(s is not None and -1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    assert max(range(4), key=lambda i: scores[i]) == 1  # type: ignore[arg-type, return-value]


async def test_batch_size_does_not_change_scores(tiny_bi_encoder: Path) -> None:
    a = await DenseScorer(tiny_bi_encoder, batch_size=1).ascore(
        "coffee", TEXTS, deadline=Deadline.never()
    )
    b = await DenseScorer(tiny_bi_encoder, batch_size=64).ascore(
        "coffee", TEXTS, deadline=Deadline.never()
    )
    assert a == pytest.approx(b, abs=1e-5)


async def test_precomputed_embeddings_are_used(tiny_bi_encoder: Path) -> None:
    scorer = DenseScorer(tiny_bi_encoder)
    query_vec = scorer.embed_query("coffee")
    store = PrecomputedEmbeddings()
    cands = [
        Candidate("x", "an unrelated text", metadata={"embedding": (query_vec * 3).tolist()}),
        Candidate("y", "another text", metadata={"embedding": (-query_vec).tolist()}),
        Candidate("z", "a text without a vector"),
    ]
    assert store.add_candidates(cands) == 2
    scorer.embeddings_from = store
    scores = await scorer.ascore("coffee", [c.text for c in cands], deadline=Deadline.never())
    assert scores[0] == pytest.approx(1.0, abs=1e-5)  # normalised, so the 3x does not matter
    assert scores[1] == pytest.approx(-1.0, abs=1e-5)
    assert scores[2] is not None and -1.0 < scores[2] < 1.0  # encoded by the model


async def test_precomputed_embeddings_of_another_model_are_refused(tiny_bi_encoder: Path) -> None:
    store = PrecomputedEmbeddings()
    store.add("some text", np.ones(7))
    scorer = DenseScorer(tiny_bi_encoder, embeddings_from=store)
    with pytest.raises(ConfigError, match="7 dimensions"):
        await scorer.ascore("q", ["some text"], deadline=Deadline.never())
    with pytest.raises(InputError):
        store.add("other", np.ones(8))  # one store, one length
    with pytest.raises(InputError):
        store.add("nan", [float("nan")] * 7)


def test_store_is_bounded() -> None:
    store = PrecomputedEmbeddings(max_entries=2)
    for t in "abc":
        store.add(t, [1.0, 0.0])
    assert len(store) == 2 and store("a") is None and store("c") is not None


async def test_empty_and_overlong_texts(
    tiny_bi_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = DenseScorer(tiny_bi_encoder, max_seq_length=16)
    caplog.set_level(logging.WARNING, logger="llmrerank")
    scores = await scorer.ascore(
        "coffee", ["", " ", "coffee " * 10_000], deadline=Deadline.after(30)
    )
    assert scores[:2] == [None, None] and isinstance(scores[2], float)
    assert "longer than 16 tokens were truncated" in caplog.text


async def test_non_finite_embeddings_are_not_scored(
    tiny_bi_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_bi_encoder), device="cpu")
    bert = model[0].auto_model
    token = model.tokenizer.convert_tokens_to_ids("glacier")
    bert.embeddings.word_embeddings.weight.data[token] = float("nan")
    model.save(str(tmp_path / "nan"))
    scorer = DenseScorer(tmp_path / "nan")
    scores = await scorer.ascore(
        "coffee", ["apple river", "a glacier melts", "coffee"], deadline=Deadline.after(30)
    )
    assert scores[1] is None and scores[0] is not None and scores[2] is not None
    assert "non-finite" in caplog.text


async def test_deadline_between_batches(tiny_bi_encoder: Path) -> None:
    scorer = DenseScorer(tiny_bi_encoder, batch_size=8)
    scorer.load()
    texts = [f"text number {i} " + "apple river castle " * 15 for i in range(10_000)]
    t0 = time.monotonic()
    scores = await scorer.ascore("apple", texts, deadline=Deadline.after(0.4))
    assert time.monotonic() - t0 < 1.5
    assert scores[0] is not None and scores[-1] is None


async def test_ten_thousand_candidates_through_the_funnel(tiny_bi_encoder: Path) -> None:
    scorer = DenseScorer(tiny_bi_encoder, batch_size=256)
    texts = [f"document {i} about apple and river {i % 97}" for i in range(10_000)]
    ranking = await Funnel(fast=scorer, llm=None).arerank("apple river", texts)
    assert len(ranking) == 10_000 and len(set(ranking.ids)) == 10_000
    assert all(r.stage == "fast" and r.fast_score is not None for r in ranking)


async def test_single_candidate(tiny_bi_encoder: Path) -> None:
    ranking = await Funnel(fast=DenseScorer(tiny_bi_encoder), llm=None).arerank("q", ["only one"])
    assert ranking.ids == ["0"] and ranking[0].fast_score is not None


def test_fingerprints_tell_models_apart(tiny_bi_encoder: Path) -> None:
    assert DenseScorer().fingerprint == "dense:all-MiniLM-L6-v2(max_seq=model)"
    assert DenseScorer(tiny_bi_encoder).fingerprint != DenseScorer().fingerprint
    assert DenseScorer(max_seq_length=128).fingerprint != DenseScorer().fingerprint
    with pytest.raises(InputError):
        DenseScorer(batch_size=0)


def test_bad_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="could not load"):
        DenseScorer("no-such-org/no-such-model").load()
