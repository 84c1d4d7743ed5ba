"""The speed benchmark's arithmetic and report (no model runs here)."""

from __future__ import annotations

import pytest
from llmrerank.eval.llm_speed import _row, spearman, write_markdown


def test_spearman_is_one_for_the_same_order_and_minus_one_reversed():
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # ties share their average rank: [1, 1, 2] against [1, 2, 3]
    assert spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.8660, abs=1e-4)


def test_a_row_divides_texts_and_tokens_by_the_total_time():
    row = _row("x", "local", [1.0, 3.0], 40, 8800, {})
    assert row["candidates_per_s"] == 10.0 and row["tokens_per_s"] == 2200.0
    assert row["window_p50_s"] == 2.0 and row["window_max_s"] == 3.0
    assert _row("s", "server", [2.0], 20, 100, {})["prefix_cache"].startswith("cold")


def test_the_report_has_every_row_and_the_quality_deltas(tmp_path):
    result = {
        "command": "llmrerank bench llm-speed",
        "machine": {"machine": "x86_64", "cpu_count": 2},
        "load_before": [0.1],
        "load_after": [0.2],
        "workload": {"dataset": "d", "queries": 2, "k": 20, "texts": 40, "mean_prompt_tokens": 220},
        "speed": {
            "rows": [
                _row("a", "local", [1.0], 20, 4400, {}),
                _row("b", "llama.cpp", [2.0], 20, 4400, {}),
            ]
        },
        "loaded": [
            {
                "hogs": 2,
                "rows": {"1 thread": 3.0, "2 threads": 1.0},
                "load_at_end": [3.1],
                "default_threads_at_end": 1,
            }
        ],
        "quality": {
            "d": {
                "queries": 30,
                "rows": {
                    "float32": {"alone": 0.3, "fused w=0.6": 0.4},
                    "default": {"alone": 0.31, "fused w=0.6": 0.39},
                },
            }
        },
    }
    path = tmp_path / "r.md"
    write_markdown(result, path)
    text = path.read_text()
    assert "| a | 20.0 |" in text and "| b | 10.0 |" in text
    assert "| 2 | 3.0 | 1.0 |" in text
    assert "+0.0100" in text and "-0.0100" in text
