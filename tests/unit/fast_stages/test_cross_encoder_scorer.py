"""CrossEncoderScorer mechanics tests on a tiny cross-encoder built by conftest.py.

The tiny model is trained for seconds to score texts holding an ON_TOPIC word above texts holding
an OFF_TOPIC word; these tests check loading, heads, batching, truncation, non-finite outputs and
deadlines, not relevance quality.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import pytest
import transformers
from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import ConfigError, InputError, MissingExtraError
from llmrerank.scorers import CrossEncoderScorer
from unit.fast_stages.conftest import OFF_TOPIC, ON_TOPIC

TEXTS = [
    f"the old {OFF_TOPIC[0]} near a red house",
    f"a small {ON_TOPIC[0]} with blue paint",
    f"large {OFF_TOPIC[1]} under the new roof",
    f"an {ON_TOPIC[1]} of the old town",
]


async def test_one_label_head_ranks_on_topic_first(tiny_cross_encoder: Path) -> None:
    scorer = CrossEncoderScorer(tiny_cross_encoder, batch_size=2)
    scores = await scorer.ascore("which one", TEXTS, deadline=Deadline.after(30))
    assert all(isinstance(s, float) for s in scores)
    on, off = [scores[1], scores[3]], [scores[0], scores[2]]
    assert min(on) > max(off)  # type: ignore[type-var]
    assert scorer.num_labels == 1


async def test_two_label_head_gives_the_positive_probability(
    tiny_cross_encoder_2labels: Path,
) -> None:
    scorer = CrossEncoderScorer(tiny_cross_encoder_2labels)
    scores = await scorer.ascore("which one", TEXTS, deadline=Deadline.after(30))
    assert all(s is not None and 0.0 < s < 1.0 for s in scores)
    assert scores[1] > 0.5 > scores[0]  # type: ignore[operator]
    negative = CrossEncoderScorer(tiny_cross_encoder_2labels, label_index=0)
    flipped = await negative.ascore("which one", TEXTS, deadline=Deadline.after(30))
    assert flipped == pytest.approx([1 - s for s in scores])  # type: ignore[operator]
    assert negative.fingerprint != scorer.fingerprint


async def test_batches_do_not_change_scores(tiny_cross_encoder: Path) -> None:
    one = await CrossEncoderScorer(tiny_cross_encoder, batch_size=1).ascore(
        "which one", TEXTS, deadline=Deadline.never()
    )
    many = await CrossEncoderScorer(tiny_cross_encoder, batch_size=16).ascore(
        "which one", TEXTS, deadline=Deadline.never()
    )
    assert one == pytest.approx(many, abs=1e-5)


async def test_empty_and_overlong_texts(
    tiny_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = CrossEncoderScorer(tiny_cross_encoder, max_length=32)
    long_text = f"{ON_TOPIC[2]} " + "and the " * 5_000
    caplog.set_level(logging.DEBUG, logger="llmrerank")
    scores = await scorer.ascore("which one", ["", "   ", long_text], deadline=Deadline.after(30))
    assert scores[:2] == [None, None] and isinstance(scores[2], float)
    warnings = [r for r in caplog.records if "truncated" in r.message]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    await scorer.ascore("which one", [long_text], deadline=Deadline.after(30))
    again = [r for r in caplog.records if "truncated" in r.message]
    assert len(again) == 2 and again[1].levelno == logging.DEBUG  # warned once


async def test_non_finite_outputs_are_not_scored(
    tiny_cross_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model whose embedding of one word is NaN: texts with that word come back unscored."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    poisoned = tokenizer.convert_tokens_to_ids(ON_TOPIC[3])
    model.bert.embeddings.word_embeddings.weight.data[poisoned] = float("nan")
    model.save_pretrained(str(tmp_path / "nan"))
    tokenizer.save_pretrained(str(tmp_path / "nan"))
    scorer = CrossEncoderScorer(tmp_path / "nan")
    texts = [TEXTS[1], f"a {ON_TOPIC[3]} here", TEXTS[0]]
    scores = await scorer.ascore("which one", texts, deadline=Deadline.after(30))
    assert scores[1] is None and isinstance(scores[0], float) and isinstance(scores[2], float)
    assert scores.reasons == {1: "malformed_output"}  # type: ignore[attr-defined]
    assert "non-finite" in caplog.text
    ranking = await Funnel(fast=scorer, llm=None).arerank("which one", texts)
    assert ranking.ids[-1] == "1" and ranking.by_id("1").fast_score is None
    # As the second stage: the unscored text keeps its fast place, flagged malformed_output.
    second = await Funnel(llm=scorer, k=3).arerank("which one", texts)
    assert second.by_id("1").llm_score is None and "malformed_output" in second.reasons
    assert "deadline" not in second.reasons


async def test_deadline_between_batches_leaves_the_rest_unscored(tiny_cross_encoder: Path) -> None:
    scorer = CrossEncoderScorer(tiny_cross_encoder, batch_size=4)
    scorer.load()
    texts = [f"text {i} " + "with many words " * 10 for i in range(4_000)]
    t0 = time.monotonic()
    scores = await scorer.ascore("which one", texts, deadline=Deadline.after(0.5))
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    assert scores[0] is not None and scores[-1] is None
    done = sum(s is not None for s in scores)
    assert all(s is not None for s in scores[:done]) and all(s is None for s in scores[done:])
    assert scores.reasons == {}  # type: ignore[attr-defined]  # None without a reason: deadline


async def test_in_the_funnel_with_a_deadline(tiny_cross_encoder: Path) -> None:
    scorer = CrossEncoderScorer(tiny_cross_encoder)
    scorer.load()
    ranking = await Funnel(fast=scorer, llm=None).arerank("which one", TEXTS, deadline=10)
    assert set(ranking.ids[:2]) == {"1", "3"} and not ranking.degraded
    assert ranking.info["fast_scorer"] == scorer.fingerprint


def test_configuration_errors(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        CrossEncoderScorer(tiny_cross_encoder, batch_size=0)
    with pytest.raises(InputError):
        CrossEncoderScorer(tiny_cross_encoder, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one-label head"):
        CrossEncoderScorer(tiny_cross_encoder, label_index=1).load()
    with pytest.raises(ConfigError, match="could not load"):
        CrossEncoderScorer(tmp_path / "missing").load()


@pytest.mark.skipif(
    importlib.util.find_spec("optimum") is not None, reason="optimum is installed here"
)
def test_onnx_backend_without_its_extra_names_it(tiny_cross_encoder: Path) -> None:
    with pytest.raises(MissingExtraError, match=r"llmrerank\[onnx\]"):
        CrossEncoderScorer(tiny_cross_encoder, backend="onnx").load()
