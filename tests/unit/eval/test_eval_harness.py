"""A small, fast run of the benchmark harness on ../shared/data/adi.

The funnel's LLM is a ScriptedScorer and the generating baselines run on a scripted generator
(an oracle that reads the judgements, or one that answers nonsense), so the run takes seconds;
the real models are exercised by tests/integration/test_eval_models.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("ranx", reason="the benchmark needs llmrerank[bench] (ranx)")
pytest.importorskip("bm25s", reason="the benchmark needs llmrerank[bench] (bm25s)")

from llmrerank.cli import main
from llmrerank.eval.data import default_data_dir, load_beir
from llmrerank.eval.generation import LocalGenerator, parse_score
from llmrerank.eval.report import write_report
from llmrerank.eval.runner import REFERENCE_BM25_NDCG10, BenchConfig, run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning")


@pytest.fixture(scope="module")
def adi() -> Path:
    data = default_data_dir()
    if data is None or not (data / "adi").is_dir():
        pytest.skip("../shared/data/adi is absent (set LLMRERANK_DATA to the collections' folder)")
    return data / "adi"


class ScriptedGenerator(LocalGenerator):
    """Answers each framework's prompt from the judgements (``oracle``) or with nonsense."""

    def __init__(self, qrels: dict[str, dict[str, int]] | None, texts: dict[str, str]) -> None:
        super().__init__(max_new_tokens=8)
        self.relevant = {
            t
            for q, docs in (qrels or {}).items()
            for d, g in docs.items()
            if g > 0
            for t in [texts[d]]
        }
        self.oracle = qrels is not None

    def load(self) -> None:
        pass

    def generate(self, prompt: str, *, max_new_tokens: int | None = None) -> str:
        self.stats.calls += 1
        self.stats.prompt_tokens += len(prompt.split())
        self.stats.completion_tokens += 4
        if not self.oracle:
            return "I think it is quite interesting."
        hits = [t for t in self.relevant if t in prompt]
        if "Relevant (YES / NO)" in prompt:  # LangChain LLMChainFilter
            return "YES" if hits else "NO"
        if "Document 1:" in prompt:  # LlamaIndex LLMRerank: a numbered batch
            docs = re.split(r"Document (\d+):\n", prompt)[1:]
            lines = [
                f"Doc: {num}, Relevance: 9"
                for num, body in zip(docs[::2], docs[1::2], strict=True)
                if any(t in body for t in self.relevant)
            ]
            return "\n".join(lines)
        return "The document matches. Score: 9" if hits else "Unrelated. Score: 2"


ARMS = (
    "retriever",
    "fast",
    "naive-llm",
    "llamaindex-llmrerank",
    "langchain-llmfilter",
    "llm-only",
    "funnel-realtime",
    "funnel-enterprise",
    "funnel-enterprise-nodl",
    "langchain-enterprise",
)


def _config(adi: Path, **kw: object) -> BenchConfig:
    settings: dict[str, object] = dict(
        dataset=adi,
        queries=3,
        n=25,
        k=10,
        subset=5,
        arms=ARMS,
        llm="scripted",
        scripted_latency=0.002,
        progress=False,
    )
    settings.update(kw)
    return BenchConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def oracle_run(adi: Path) -> dict:
    ds = load_beir(adi)
    gen = ScriptedGenerator(
        {q: dict(v) for q, v in ds.qrels.items()},
        {d: doc.full_text for d, doc in ds.corpus.items()},
    )
    return run_benchmark(_config(adi, command="pytest oracle run"), generator=gen)


def test_every_arm_ranks_every_candidate(oracle_run: dict) -> None:
    assert [a["name"] for a in oracle_run["arms"]] == list(ARMS)
    assert len(oracle_run["settings"]["query_ids"]) == 3
    for arm in oracle_run["arms"]:
        assert arm["queries"] == 3
        assert arm["complete_rate"] == 1.0, arm["name"]
        for metric, value in arm["metrics"].items():
            assert 0.0 <= value <= 1.0, (arm["name"], metric)
        assert arm["latency_s"]["p50"] >= 0.0


def test_bm25_check_matches_the_data_readme(oracle_run: dict) -> None:
    check = oracle_run["retrieval"]["bm25_check"]
    assert check["reference_ndcg@10"] == REFERENCE_BM25_NDCG10["adi"]
    assert check["within_tolerance"], check
    assert check["queries"] == 35


def test_oracle_generators_lift_the_generating_baselines(oracle_run: dict) -> None:
    """The framework wrappers really route the model's answers into the ranking."""
    arms = {a["name"]: a for a in oracle_run["arms"]}
    bm25 = arms["retriever"]["metrics"]["ndcg@10"]
    for name in ("naive-llm", "llamaindex-llmrerank", "langchain-llmfilter"):
        arm = arms[name]
        assert arm["metrics"]["ndcg@10"] >= bm25, name
        assert arm["llm_judged_per_query"] == 5
        assert arm["per_candidate_s_p50"] > 0
        assert arm["extrapolated_all_n_s_p50"] == pytest.approx(arm["per_candidate_s_p50"] * 25)
        assert "top 5 only" in arm["subset_note"]
    assert arms["naive-llm"]["llm_calls_per_query"] == 5  # one generation per candidate
    assert arms["llamaindex-llmrerank"]["llm_calls_per_query"] == 1  # one batch of 5
    assert arms["naive-llm"]["degraded_rate"] == 0.0


def test_funnel_arms_report_costs_and_deadlines(oracle_run: dict) -> None:
    arms = {a["name"]: a for a in oracle_run["arms"]}
    assert arms["llm-only"]["llm_judged_per_query"] == 10
    assert arms["llm-only"]["llm_calls_per_query"] == 10  # the scripted scorer takes 1 text a call
    assert arms["llm-only"]["prompt_tokens_per_query"] > 0
    assert arms["funnel-enterprise"]["deadline_s"] == 2.5
    assert arms["funnel-enterprise-nodl"]["deadline_s"] is None
    targets = {t["target"].split(":")[0]: t for t in oracle_run["targets"]}
    assert targets["funnel-enterprise"]["met"]  # 2 ms scripted calls finish far inside 2.5 s
    assert targets["funnel-enterprise"]["complete_rate"] == 1.0


def test_funnel_arms_use_the_default_fast_stage_and_the_langchain_arm_runs(
    oracle_run: dict,
) -> None:
    arms = {a["name"]: a for a in oracle_run["arms"]}
    for name in ("fast", "funnel-enterprise", "funnel-realtime"):
        assert arms[name]["fast_scorer"].startswith("retriever_fusion("), name
    lc = arms["langchain-enterprise"]
    assert lc["complete_rate"] == 1.0 and lc["deadline_s"] == 2.5
    assert "ContextualCompressionRetriever" in lc["description"]
    floor = next(t for t in oracle_run["targets"] if t["target"].startswith("floor"))
    assert set(floor["ndcg_diff_vs_retriever"]) >= {"fast", "langchain-enterprise"}


def test_dense_retriever_over_the_corpus_is_cached(adi: Path, tmp_path: Path, monkeypatch) -> None:
    from llmrerank.eval.retrieval import DenseRetriever

    monkeypatch.setenv("LLMRERANK_CACHE", str(tmp_path))
    ds = load_beir(adi)
    first = DenseRetriever(ds)
    assert not first.cached and first.cache_path.is_file()
    again = DenseRetriever(ds)
    assert again.cached
    (cands,) = again.retrieve([ds.queries[ds.judged_query_ids[0]]], 10)
    scores = [c.retrieval_score for c in cands]
    assert len(cands) == 10 and scores == sorted(scores, reverse=True)
    result = run_benchmark(_config(adi, retriever="dense", arms=("retriever", "fast")))
    assert result["settings"]["retriever"].startswith("dense(")
    assert all(a["complete_rate"] == 1.0 for a in result["arms"])


def test_nodl_arms_reuse_the_deadline_arms_scores_and_rank_the_same(adi: Path) -> None:
    arms = ("funnel-enterprise", "funnel-enterprise-nodl")
    shared = run_benchmark(_config(adi, arms=arms, llm="scripted"))
    alone = run_benchmark(_config(adi, arms=arms, llm="scripted", share_scores=False))
    by = {a["name"]: a for a in shared["arms"]}
    solo = {a["name"]: a for a in alone["arms"]}
    assert by["funnel-enterprise-nodl"]["metrics"] == solo["funnel-enterprise-nodl"]["metrics"]
    assert by["funnel-enterprise-nodl"]["llm_calls_per_query"] == 0  # all from the cache
    assert solo["funnel-enterprise-nodl"]["llm_calls_per_query"] > 0
    assert by["funnel-enterprise"]["llm_calls_per_query"] > 0  # the deadline arm never reads
    assert "latency not comparable" in by["funnel-enterprise-nodl"]["description"]


def test_nonsense_answers_degrade_to_bm25_order(adi: Path) -> None:
    ds = load_beir(adi)
    gen = ScriptedGenerator(None, {d: doc.full_text for d, doc in ds.corpus.items()})
    result = run_benchmark(
        _config(
            adi, arms=("retriever", "naive-llm", "llamaindex-llmrerank", "langchain-llmfilter")
        ),
        generator=gen,
    )
    arms = {a["name"]: a for a in result["arms"]}
    for name in ("naive-llm", "llamaindex-llmrerank", "langchain-llmfilter"):
        assert arms[name]["degraded_rate"] == 1.0, name
        assert arms[name]["complete_rate"] == 1.0
        assert arms[name]["metrics"] == arms["retriever"]["metrics"], name


def test_reports_are_written(oracle_run: dict, tmp_path: Path) -> None:
    paths = write_report(oracle_run, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["command"] == "pytest oracle run"
    assert {a["name"] for a in data["arms"]} == set(ARMS)
    assert data["machine"]["cpu_count"] >= 1
    md = paths["markdown"].read_text()
    assert "pytest oracle run" in md
    for name in ARMS:
        assert f"| {name} |" in md
    assert "extrapolated" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line(adi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "--dataset",
        str(adi),
        "--queries",
        "2",
        "--n",
        "15",
        "--arms",
        "bm25,funnel-realtime",
        "--llm",
        "scripted",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "adi-scripted.json").read_text())
    assert data["command"].startswith("llmrerank bench --dataset ")
    assert "--arms bm25,funnel-realtime" in data["command"]
    assert [a["name"] for a in data["arms"]] == ["retriever", "funnel-realtime"]  # old alias
    assert (tmp_path / "adi-scripted.md").is_file() and (tmp_path / "adi-scripted.png").is_file()
    assert "funnel-realtime" in capsys.readouterr().out


def test_standalone_module_command(adi: Path, tmp_path: Path) -> None:
    from llmrerank.eval.cli import main as eval_main

    argv = ["--dataset", str(adi), "--queries", "1", "--arms", "bm25", "--out", str(tmp_path)]
    assert eval_main([*argv, "--name", "solo", "--no-progress"]) == 0
    data = json.loads((tmp_path / "solo.json").read_text())
    assert data["command"].startswith("python -m llmrerank.eval --dataset")
    assert data["settings"]["n"] == 300  # the default depth (adi has 82 documents: all of them)
    assert data["arms"][0]["complete_rate"] == 1.0


def test_command_line_rejects_bad_options(adi: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--dataset", str(adi), "--arms", "bm25,nope"])
    assert main(["bench", "--dataset", str(tmp_path), "--arms", "bm25", "--no-progress"]) == 2
    assert main(["bench", "--arms", "bm25"]) == 2  # no --dataset


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("Reasoning ... Score: 7", 7.0),
        ("I'd rate it 8/10.", 8.0),
        ("score is 3. Final score: 9", 9.0),
        ("Score: 42", None),
        ("no number here", None),
    ],
)
def test_parse_score(answer: str, score: float | None) -> None:
    assert parse_score(answer) == score
