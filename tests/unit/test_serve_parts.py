"""The server's parts without a server: settings precedence, admission, demo corpus, JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("pydantic_settings", reason="the serve parts need llmrerank[serve]")

from llmrerank import Candidate, ConfigError, Funnel
from llmrerank.serve.admission import Admission, Overloaded
from llmrerank.serve.client import ranking_from_body
from llmrerank.serve.corpus import DemoCorpus, DemoDoc
from llmrerank.serve.schemas import dumps, ranking_body
from llmrerank.serve.settings import load_settings
from llmrerank.testing import ScriptedScorer


def test_settings_flags_beat_env_beat_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "s.toml"
    config.write_text('preset = "research"\nport = 9001\nmax_documents = 7\nhost = "10.0.0.1"\n')
    monkeypatch.setenv("LLMRERANK_PORT", "9002")
    monkeypatch.setenv("LLMRERANK_HOST", "127.0.0.2")
    s = load_settings(config, host="127.0.0.3", preset=None)
    assert (s.host, s.port, s.preset, s.max_documents) == ("127.0.0.3", 9002, "research", 7)
    assert load_settings().host == "127.0.0.2"
    monkeypatch.delenv("LLMRERANK_HOST")
    assert load_settings().host == "127.0.0.1"  # loopback unless told otherwise


def test_bad_settings_raise_config_error_naming_them(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text('preset = "fastest"\nmax_queued = -2\ncolour = "red"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert "unknown preset 'fastest'" in message and "max_queued" in message and "colour" in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


async def test_admission_queues_then_turns_away() -> None:
    adm = Admission(max_concurrent=1, max_queued=1, retry_after=3)
    order: list[str] = []

    async def job(name: str, hold: float) -> None:
        async with adm.slot():
            order.append(name)
            await asyncio.sleep(hold)

    first = asyncio.ensure_future(job("a", 0.2))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(job("b", 0.0))
    await asyncio.sleep(0.01)
    assert (adm.running, adm.queued) == (1, 1)
    with pytest.raises(Overloaded, match="retry in 3 s") as info:
        await adm.acquire()
    assert info.value.retry_after == 3
    await asyncio.gather(first, second)
    assert order == ["a", "b"] and (adm.running, adm.queued) == (0, 0)


def _corpus() -> DemoCorpus:
    texts = [
        ("gzip", "Read and write gzip compressed files. The gzip module wraps zlib."),
        ("json", "Encode Python objects as JSON text. Decode JSON documents into objects."),
        ("zlib", "Compression compatible with gzip. It works on bytes in memory."),
        ("os", "Miscellaneous operating system interfaces."),
    ]
    return DemoCorpus([DemoDoc(id=f"d{i}", title=t, text=x) for i, (t, x) in enumerate(texts)])


def test_demo_corpus_search_and_extractive_summary() -> None:
    corpus = _corpus()
    hits = corpus.search("gzip compressed files", top_n=3)
    assert [d.title for d, _ in hits][:2] == ["gzip", "zlib"]
    assert all(score > 0 for _, score in hits) and "os" not in [d.title for d, _ in hits]
    assert corpus.search("the of and") == []  # only stopwords: nothing matches
    summary = corpus.summary("gzip compressed files", [d.text for d, _ in hits], max_sentences=2)
    assert summary == [
        "Read and write gzip compressed files.",
        "Compression compatible with gzip.",
    ]


def test_response_body_round_trips_through_the_client() -> None:
    funnel = Funnel(llm=ScriptedScorer(), k=2)
    docs = ["apple pie", {"text": "banana bread", "id": "x"}, "apple tart recipe"]
    ranking = funnel.rerank(
        "apple recipe",
        [
            Candidate(id=str(i), text=t, metadata={"index": i})
            for i, t in enumerate(["apple pie", "banana bread", "apple tart recipe"])
        ],
    )
    body = json.loads(
        dumps(
            ranking_body(
                ranking, docs, top_n=None, return_documents=True, model="m", request_id="r"
            )
        )
    )
    back = ranking_from_body("apple recipe", body)
    assert back.ids == ranking.ids
    assert [r.score for r in back] == [r.score for r in ranking]
    assert [r.stage for r in back] == [r.stage for r in ranking]
    assert back.k == 2 and back.llm_scored == ranking.llm_scored
    assert body["results"][[r["index"] for r in body["results"]].index(1)]["document"] == docs[1]


def test_dumps_escapes_lone_surrogates_instead_of_failing() -> None:
    text = dumps({"t": "ok \ud800", "x": float("nan")})
    assert json.loads(text) == {"t": "ok \ud800", "x": None}
    assert dumps({"t": "é"}) == '{"t": "é"}'
