"""The new scorers are exported lazily: missing extras never break ``import llmrerank``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llmrerank.scorers as scorers
import pytest
from llmrerank.errors import MissingExtraError

CORE = str(Path(__file__).resolve().parents[3] / "core")


def test_all_names_resolve() -> None:
    for name in scorers.__all__:
        assert getattr(scorers, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = scorers.NoSuchScorer  # type: ignore[attr-defined]


def test_import_loads_no_optional_dependency() -> None:
    code = (
        "import sys; import llmrerank, llmrerank.scorers; "
        "heavy = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": CORE})


@pytest.mark.parametrize(
    ("blocked", "make", "extra"),
    [
        ("sentence_transformers", lambda: scorers.DenseScorer(), "dense"),
        ("sentence_transformers", lambda: scorers.CrossEncoderScorer("m"), "dense"),
        (
            "httpx",
            lambda: scorers.RerankAPIScorer("vllm", model="m", base_url="http://x"),
            "rerank-api",
        ),
    ],
)
def test_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, blocked: str, make: object, extra: str
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == blocked else real_find_spec(name, *a),
    )
    monkeypatch.setitem(sys.modules, blocked, None)  # an import now raises ImportError
    with pytest.raises(MissingExtraError, match=rf"llmrerank\[{extra}\]"):
        make()  # type: ignore[operator]
