"""Read a relevance-judged collection in BEIR layout, in place.

A collection is a folder holding ``corpus.jsonl`` (``{"_id", "title", "text"}`` a line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/test.tsv`` (a header line, then
``query-id<TAB>corpus-id<TAB>score``; higher is more relevant, 0 judged non-relevant). This is
the layout of every BEIR download, so a user points the benchmark at their own data the same way.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["DATA_ENV", "Dataset", "Document", "default_data_dir", "load_beir"]

DATA_ENV = "LLMRERANK_DATA"
"""Environment variable naming the folder that holds the test collections."""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and body, as BM25 and every reranker see the document."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class Dataset:
    """A loaded collection. ``qrels`` maps query id -> {doc id: grade}."""

    name: str
    path: Path
    corpus: Mapping[str, Document]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]

    @property
    def judged_query_ids(self) -> list[str]:
        """Queries with at least one judgement, in file order: the only ones evaluated."""
        return [q for q in self.queries if self.qrels.get(q)]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "documents": len(self.corpus),
            "queries": len(self.queries),
            "judged_queries": len(self.judged_query_ids),
            "judged_pairs": sum(len(v) for v in self.qrels.values()),
        }


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise InputError(f"{path}:{lineno}: expected an object with an '_id' field")
            yield lineno, row


def load_beir(path: str | os.PathLike[str], *, split: str = "test") -> Dataset:
    """Load a BEIR-layout folder; raises :class:`InputError` naming the file and line at fault."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    missing = [str(p.relative_to(root)) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(
            f"{root} is not a BEIR-layout folder: missing {', '.join(missing)} "
            "(need corpus.jsonl, queries.jsonl and qrels/<split>.tsv)"
        )

    corpus: dict[str, Document] = {}
    for _, row in _jsonl(files["corpus"]):
        doc_id = str(row["_id"])
        corpus[doc_id] = Document(doc_id, str(row.get("title") or ""), str(row.get("text") or ""))
    queries = {str(row["_id"]): str(row.get("text") or "") for _, row in _jsonl(files["queries"])}

    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts and not parts[-1].lstrip("-").isdigit():
                continue  # the header
            if not line.strip():
                continue
            if len(parts) != 3:
                raise InputError(
                    f"{files['qrels']}:{lineno}: expected 3 tab-separated fields "
                    f"(query-id, corpus-id, score), got {len(parts)}"
                )
            qid, did, grade = parts
            try:
                qrels.setdefault(qid, {})[did] = int(grade)
            except ValueError:
                raise InputError(
                    f"{files['qrels']}:{lineno}: score {grade!r} is not an integer"
                ) from None
    if not corpus:
        raise InputError(f"{files['corpus']} holds no documents")
    if not any(q in qrels for q in queries):
        raise InputError(f"no query in {files['queries']} has a judgement in {files['qrels']}")
    return Dataset(root.name, root, corpus, queries, qrels)


def default_data_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """Where the test collections are: ``$LLMRERANK_DATA``, else ``shared/data`` beside the
    repository (its parent's ``shared/data``). ``None`` when neither exists."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path(start) if start is not None else Path(__file__).resolve()
    for parent in [here, *here.parents]:
        if (parent / "pyproject.toml").is_file():
            candidate = parent.parent / "shared" / "data"
            return candidate if candidate.is_dir() else None
    return None


def resolve_dataset(name: str | os.PathLike[str]) -> Path:
    """A BEIR-layout folder: ``name`` itself when it is a folder, else ``name`` under
    :func:`default_data_dir` (so ``cranfield`` finds ``../shared/data/cranfield``)."""
    p = Path(name)
    base = default_data_dir()
    if not p.is_dir() and base is not None and (base / p).is_dir():
        p = base / p
    if not p.is_dir():
        raise InputError(f"no BEIR-layout folder {str(name)!r} (nor under {base})")
    return p


def seeded_query_ids(judged: Sequence[str], count: int | None, rng: random.Random) -> list[str]:
    """``count`` of the judged query ids drawn with ``rng``, in file order (all when ``count`` is
    ``None`` or not smaller than their number)."""
    if count is None or count >= len(judged):
        return list(judged)
    picked = set(rng.sample(list(judged), count))
    return [q for q in judged if q in picked]
