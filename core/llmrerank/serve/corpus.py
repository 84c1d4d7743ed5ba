"""The demo corpus: paragraphs of the installed Python standard library's docstrings.

Natural English text present on every machine, with no licence question and no download. The
docstrings are read with :mod:`ast` from the standard library's source files (nothing is
imported, so no module runs), split into paragraphs, filtered to prose, and sampled round-robin
across modules so that every part of the library is represented. The result is cached as JSON
under the llmrerank cache directory; later start-ups read the cache.

:class:`DemoCorpus` is also the demo's first stage: BM25 over the whole corpus picks the top-N
paragraphs that the funnel then reranks, and :meth:`DemoCorpus.summary` picks the sentences of the
top results that best match the query (an extractive summary).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import os
import re
import sys
import sysconfig
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..models import cache_dir
from ..scorers.bm25 import _LuceneIdfBM25, tokenize

__all__ = ["DemoCorpus", "DemoDoc", "build_stdlib_corpus", "stdlib_paragraphs"]

logger = logging.getLogger("llmrerank")

CORPUS_VERSION = 1
"""Bump when the extraction changes, so stale caches are rebuilt."""

_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "__pycache__",
        "config-3",
    }
)
_WORD = re.compile(r"[A-Za-z]{2,}")
_COLUMNS = re.compile(r"\S {3,}\S")  # aligned columns: a table, not a sentence
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


@dataclass(frozen=True, slots=True)
class DemoDoc:
    """One paragraph of the demo corpus."""

    id: str
    title: str
    """Where it comes from: ``module.Class.method``."""
    text: str


def _is_prose(paragraph: str) -> bool:
    """Keep paragraphs that read as sentences: no doctest, no tables, mostly words."""
    if len(paragraph) < 80 or len(paragraph) > 1200:
        return False
    if ">>>" in paragraph or "..." in paragraph[:4] or "::" in paragraph or "|" in paragraph:
        return False
    words = paragraph.split()
    if len(words) < 12:
        return False
    wordy = sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:()'\"`")))
    return wordy / len(words) >= 0.7 and paragraph[0].isalpha()


def _paragraphs(doc: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", doc):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        # Indented or bulleted blocks are code, signatures or lists, not prose.
        if not lines or any(
            ln.startswith(("-", "*", "+", "$", "%", "#")) or _COLUMNS.search(ln) for ln in lines
        ):
            continue
        text = " ".join(lines)
        if _is_prose(text):
            yield text


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of the module and its public classes and functions."""
    doc = ast.get_docstring(tree)
    if doc:
        yield module, doc

    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_"):
                    continue
                name = f"{prefix}.{node.name}"
                d = ast.get_docstring(node)
                if d:
                    yield name, d
                if isinstance(node, ast.ClassDef):
                    yield from walk(node.body, name)

    yield from walk(tree.body, module)


def stdlib_paragraphs(root: Path | None = None) -> Iterator[tuple[str, str]]:
    """Every prose paragraph of the standard library's docstrings, as (title, text)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")
        )
        for filename in sorted(filenames):
            private = filename.startswith(("test_", "_")) and filename != "__init__.py"
            if not filename.endswith(".py") or private:
                continue
            path = Path(dirpath) / filename
            module = _module_name(root, path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # invalid escape sequences in old sources
                    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            for title, doc in _docstrings(tree, module):
                for paragraph in _paragraphs(doc):
                    yield title, paragraph


def build_stdlib_corpus(size: int = 3000, root: Path | None = None) -> list[DemoDoc]:
    """Up to ``size`` distinct paragraphs, taken round-robin across top-level modules."""
    by_module: dict[str, list[tuple[str, str]]] = defaultdict(list)
    seen: set[str] = set()
    for title, text in stdlib_paragraphs(root):
        if text in seen:
            continue
        seen.add(text)
        by_module[title.split(".")[0]].append((title, text))
    queues = [iter(by_module[m]) for m in sorted(by_module)]
    docs: list[DemoDoc] = []
    while queues and len(docs) < size:
        alive = []
        for q in queues:
            item = next(q, None)
            if item is None:
                continue
            alive.append(q)
            title, text = item
            docs.append(DemoDoc(id=f"d{len(docs)}", title=title, text=text))
            if len(docs) >= size:
                break
        queues = alive
    return docs


def _cache_path(size: int) -> Path:
    stdlib = sysconfig.get_paths()["stdlib"]
    tag = hashlib.blake2b(
        f"{CORPUS_VERSION}|{stdlib}|{sys.version}|{size}".encode(), digest_size=8
    ).hexdigest()
    return cache_dir() / "demo" / f"stdlib-py{sys.version_info[0]}{sys.version_info[1]}-{tag}.json"


class DemoCorpus:
    """The demo's documents and the BM25 index over all of them."""

    def __init__(self, docs: Sequence[DemoDoc], *, source: str = "custom") -> None:
        if not docs:
            raise ValueError("the demo corpus is empty")
        self.docs = list(docs)
        self.source = source
        self._by_id = {d.id: d for d in self.docs}
        self._tokens = [tokenize(f"{d.title.replace('.', ' ')} {d.text}") for d in self.docs]
        self._bm25 = _LuceneIdfBM25(self._tokens)  # IDF > 0 even for common terms

    @classmethod
    def from_stdlib(cls, size: int = 3000, *, use_cache: bool = True) -> DemoCorpus:
        """Build (or read from the cache) the standard-library docstring corpus."""
        path = _cache_path(size)
        t0 = time.monotonic()
        if use_cache and path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                docs = [DemoDoc(**d) for d in raw["docs"]]
                logger.info("demo corpus: %d paragraphs read from %s", len(docs), path)
                return cls(docs, source="stdlib docstrings (cached)")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("demo corpus cache %s unusable (%s); rebuilding", path, exc)
        docs = build_stdlib_corpus(size)
        if use_cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"docs": [asdict(d) for d in docs]}), encoding="utf-8")
                tmp.replace(path)
            except OSError as exc:
                logger.warning("could not cache the demo corpus at %s (%s)", path, exc)
        logger.info(
            "demo corpus: %d paragraphs built from the stdlib in %.1f s",
            len(docs),
            time.monotonic() - t0,
        )
        return cls(docs, source="stdlib docstrings")

    def __len__(self) -> int:
        return len(self.docs)

    def get(self, doc_id: str) -> DemoDoc:
        return self._by_id[doc_id]

    def search(self, query: str, top_n: int = 50) -> list[tuple[DemoDoc, float]]:
        """The ``top_n`` paragraphs by BM25 over the whole corpus (ties by corpus order);
        only paragraphs sharing at least one term with the query."""
        terms = tokenize(query)
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=float)
        n = min(top_n, len(self.docs))
        order = np.argsort(-scores, kind="stable")[:n]
        return [(self.docs[i], float(scores[i])) for i in order if scores[i] > 0.0]

    def summary(self, query: str, texts: Sequence[str], max_sentences: int = 3) -> list[str]:
        """The sentences of ``texts`` that best match ``query``: IDF-weighted overlap of stemmed
        terms, a sentence per text at most, in the order of the texts they come from."""
        q = set(tokenize(query))
        if not q:
            return []
        idf = self._bm25.idf
        best: list[tuple[float, int, str]] = []
        for pos, text in enumerate(texts):
            top: tuple[float, str] | None = None
            for sentence in _SENTENCE.split(text):
                terms = set(tokenize(sentence))
                match = sum(max(idf.get(t, 0.0), 0.0) for t in q & terms)
                # Of equally matching sentences prefer the shorter: a denser answer.
                score = match / math.log(2 + len(terms))
                if match > 0 and (top is None or score > top[0]):
                    top = (score, sentence.strip())
            if top is not None:
                best.append((top[0], pos, top[1]))
        chosen = sorted(best, key=lambda b: -b[0])[:max_sentences]
        return [s for _, _, s in sorted(chosen, key=lambda b: b[1])]
