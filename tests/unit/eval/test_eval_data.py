"""Loading BEIR-layout collections."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from llmrerank.errors import InputError
from llmrerank.eval.data import (
    DATA_ENV,
    default_data_dir,
    load_beir,
    resolve_dataset,
    seeded_query_ids,
)


def _write(root: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_loads_a_small_collection(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "tiny",
        [{"_id": "d1", "title": "Wings", "text": "lift and drag"}, {"_id": "d2", "text": "boats"}],
        [{"_id": "1", "text": "wing lift"}, {"_id": "2", "text": "unjudged"}],
        "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n",
    )
    ds = load_beir(root)
    assert ds.name == "tiny"
    assert ds.corpus["d1"].full_text == "Wings lift and drag"
    assert ds.corpus["d2"].full_text == "boats"
    assert ds.qrels == {"1": {"d1": 2, "d2": 0}}
    assert ds.judged_query_ids == ["1"]  # query 2 has no judgement: not evaluated
    assert ds.summary()["judged_pairs"] == 2


def test_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    with pytest.raises(InputError, match=r"queries\.jsonl.*qrels/test\.tsv"):
        load_beir(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "nowhere")


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "bad",
        [{"_id": "d1", "text": "x"}],
        [{"_id": "1", "text": "q"}],
        "query-id\tcorpus-id\tscore\n1\td1\tmaybe\n",
    )
    with pytest.raises(InputError, match=r"test\.tsv:2: score 'maybe'"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("1\td1\t1\n")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{not json\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_beir(root)


def test_default_data_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "absent"))
    assert default_data_dir() is None


def test_default_data_dir_beside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    repo = tmp_path / "repo"
    (repo / "core").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    assert default_data_dir(repo / "core") is None
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir(repo / "core") == tmp_path / "shared" / "data"


def test_adi_figures_match_its_readme() -> None:
    data = default_data_dir()
    if data is None or not (data / "adi").is_dir():
        pytest.skip("../shared/data/adi is absent (set LLMRERANK_DATA to the collections' folder)")
    ds = load_beir(data / "adi")
    assert (len(ds.corpus), len(ds.judged_query_ids)) == (82, 35)
    assert sum(len(v) for v in ds.qrels.values()) == 170


def test_resolve_dataset_finds_a_name_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_dataset("tiny") == tmp_path / "tiny"
    assert resolve_dataset(tmp_path / "tiny") == tmp_path / "tiny"
    with pytest.raises(InputError, match="'nowhere'"):
        resolve_dataset("nowhere")


def test_seeded_query_ids_keep_file_order_and_repeat_with_the_seed() -> None:
    judged = [f"q{i}" for i in range(20)]
    a = seeded_query_ids(judged, 5, random.Random(3))
    assert a == seeded_query_ids(judged, 5, random.Random(3))
    assert len(a) == 5 and a == sorted(a, key=judged.index)
    assert seeded_query_ids(judged, None, random.Random(3)) == judged
    assert seeded_query_ids(judged, 50, random.Random(3)) == judged
