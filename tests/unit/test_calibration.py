"""Relevance scores in [0, 1]: the calibration map, its data file, and where it is applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llmrerank import Funnel
from llmrerank.calibration import (
    Calibration,
    Logistic,
    default_calibration,
    expected_calibration_error,
    kind_of,
    relevance_scores,
)
from llmrerank.errors import ConfigError
from llmrerank.testing import ScriptedScorer

DOCS = ["apple pie recipe with apples", "apple tart", "bananas are yellow", "cars", "pie charts"]


def _cal(**kinds: tuple[float, float]) -> Calibration:
    base = {k: {"a": 1.0, "b": 0.0} for k in ("llm", "fused", "fast", "input")}
    base.update({k: {"a": a, "b": b} for k, (a, b) in kinds.items()})
    return Calibration.from_dict({"params": {"default": base}})


def test_logistic_is_a_probability_even_at_extremes() -> None:
    m = Logistic(2.0, -1.0)
    assert m(0.5) == pytest.approx(0.5)
    assert 0.0 <= m(-1e6) < 1e-9 and 1 - 1e-9 < m(1e6) <= 1.0
    assert m(float("inf")) == 1.0 and m(float("-inf")) == 0.0
    with pytest.raises(ConfigError):
        Logistic(-1.0, 0.0)


def test_scores_are_in_unit_interval_and_monotone_in_rank() -> None:
    # the LLM disagrees with BM25, so fused scores of mixed kinds interleave
    funnel = Funnel(llm=ScriptedScorer(lambda q, t: -len(t)), k=3, deadline=None)
    ranking = funnel.rerank("apple pie", DOCS)
    # a steep fast-kind map would put fast results above LLM ones: the cap forbids it
    probs = relevance_scores(ranking, _cal(fused=(50.0, 10.0), llm=(1.0, -2.0)))
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)
    kinds = [kind_of(r, ranking) for r in ranking]
    assert set(kinds) == {"llm", "fused"}, kinds


def test_a_ranking_without_a_window_uses_the_fast_map() -> None:
    ranking = Funnel(llm=None).rerank("apple pie", DOCS)
    assert ranking.info["score_scale"] == "fast"
    assert {kind_of(r, ranking) for r in ranking} == {"fast"}
    cal = _cal(fast=(0.0, 0.0))  # constant 0.5 for the fast kind
    assert relevance_scores(ranking, cal) == [0.5] * len(DOCS)


def test_per_preset_entries_override_the_default() -> None:
    cal = Calibration.from_dict(
        {
            "params": {
                "default": {k: {"a": 0.0, "b": 0.0} for k in ("llm", "fused", "fast", "input")},
                "realtime": {"fast": {"a": 0.0, "b": 100.0}},
            }
        }
    )
    assert cal.map("realtime", "fast")(0.0) == pytest.approx(1.0)
    assert cal.map("realtime", "llm")(0.0) == pytest.approx(0.5)
    assert cal.map("unknown", "fast")(0.0) == pytest.approx(0.5)


def test_malformed_calibration_data_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="default"):
        Calibration.from_dict({"params": {"default": {"llm": {"a": 1, "b": 0}}}})
    with pytest.raises(ConfigError, match="malformed"):
        Calibration.from_dict({"params": {"default": {"llm": {"a": "x"}}}})
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        Calibration.load(bad)


def test_the_shipped_parameters_load_and_round_trip() -> None:
    cal = default_calibration()
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.params == cal.params
    assert "command" in cal.meta  # written by `llmrerank bench calibrate`


def test_expected_calibration_error() -> None:
    ece, table = expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1])
    assert ece == pytest.approx(0.1)
    assert [b["n"] for b in table] == [2.0, 2.0]
    perfect, _ = expected_calibration_error([0.5, 0.5], [0, 1])
    assert perfect == pytest.approx(0.0)
