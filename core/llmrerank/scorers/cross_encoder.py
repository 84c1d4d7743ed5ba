"""A cross-encoder first stage (or stand-alone reranker) with sentence-transformers ``CrossEncoder``.

Any local directory or hub name of a sequence-classification model works. Heads with one label
give their raw logit (monotone in the model's sigmoid, but without saturating to ties at 1.0);
heads with two labels give the softmax probability of the positive class (index 1 by default).
Scoring runs in a worker thread in micro-batches with the deadline checked between batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._optional import require
from ..budget import Deadline
from ..errors import ConfigError, InputError
from ._batching import need, score_in_batches
from .base import Scores

__all__ = ["CrossEncoderScorer"]

logger = logging.getLogger("llmrerank")

Backend = Literal["torch", "onnx", "openvino"]


class CrossEncoderScorer:
    """Scores (query, text) pairs jointly with a cross-encoder.

    Args:
        model: a local model directory or a hub name (in the local cache unless
            ``local_files_only=False``).
        batch_size: pairs per forward pass; the deadline is checked between batches.
        max_length: tokens per pair; longer pairs are cut (one logged warning, then DEBUG).
            ``None`` keeps the model's limit.
        label_index: which output of a multi-label head is "relevant" (default 1 for two labels).
        backend: ``"torch"``, or ``"onnx"`` / ``"openvino"`` where sentence-transformers and
            optimum provide them (see docs/backends.md for what installs today).
        device: torch device (default ``"cpu"``).
        num_threads: if set, ``torch.set_num_threads`` is called with it when the model loads.
        local_files_only: never contact the hub (the default).
        model_kwargs: passed to ``CrossEncoder(model_kwargs=...)`` (e.g. ``file_name`` for ONNX).
    """

    max_concurrency = 1

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        label_index: int | None = None,
        backend: Backend = "torch",
        device: str = "cpu",
        num_threads: int | None = None,
        local_files_only: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        need(
            "sentence_transformers",
            extra="dense",
            feature="CrossEncoderScorer",
            package="sentence-transformers",
        )
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size!r}")
        if max_length is not None and max_length < 8:
            raise InputError(f"max_length must be at least 8 tokens, got {max_length!r}")
        if backend not in ("torch", "onnx", "openvino"):
            raise InputError(f"backend must be 'torch', 'onnx' or 'openvino', got {backend!r}")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.label_index = label_index
        self.backend: Backend = backend
        self.device = device
        self.num_threads = num_threads
        self.local_files_only = local_files_only
        self.model_kwargs = dict(model_kwargs or {})
        self._model: Any = None
        self._labels = 1
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._warned_truncation = False

    @property
    def fingerprint(self) -> str:
        label = "" if self.label_index is None else f",label={self.label_index}"
        return (
            f"cross-encoder:{self.model_name}(max_len={self.max_length or 'model'}{label},"
            f"backend={self.backend})"
        )

    def __repr__(self) -> str:
        return f"CrossEncoderScorer({self.fingerprint!r})"

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
        st = require("sentence_transformers", extra="dense", feature="CrossEncoderScorer")
        if self.backend == "onnx":
            require(
                "optimum.onnxruntime",
                extra="onnx",
                feature="the ONNX backend of CrossEncoderScorer",
                package="optimum-onnx",
            )
        elif self.backend == "openvino":
            require(
                "optimum.intel",
                extra="openvino",
                feature="the OpenVINO backend of CrossEncoderScorer",
                package="optimum-intel",
            )
        if self.num_threads:
            import torch

            torch.set_num_threads(self.num_threads)
        try:
            model = st.CrossEncoder(
                self.model_name,
                device=self.device,
                backend=self.backend,
                max_length=self.max_length,
                local_files_only=self.local_files_only,
                model_kwargs=self.model_kwargs or None,
            )
        except Exception as exc:
            raise ConfigError(
                f"could not load the cross-encoder {self.model_name!r}: {exc}. Pass a local "
                "model directory, or a hub name already in the cache (local_files_only=True "
                "never downloads)."
            ) from exc
        labels = int(model.num_labels)
        index = self.label_index
        if labels == 1 and index not in (None, 0):
            raise ConfigError(f"{self.model_name} has a one-label head; label_index must be 0")
        if labels > 2 and index is None:
            raise ConfigError(
                f"{self.model_name} has {labels} labels; say which one means relevant with "
                "label_index="
            )
        if index is not None and not 0 <= index < labels:
            raise ConfigError(f"label_index {index} is out of range for {labels} labels")
        self._labels = labels
        return model

    @property
    def num_labels(self) -> int:
        self.load()
        return self._labels

    # ------------------------------------------------------------------ scoring

    def _predict(self, query: str, texts: Sequence[str]) -> list[float | None]:
        import torch

        model = self._model
        self._check_truncation(model, query, texts)
        logits = model.predict(
            [(query, t) for t in texts],
            batch_size=len(texts),
            show_progress_bar=False,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
        )
        logits = np.asarray(logits, dtype=np.float64)
        if self._labels == 1:
            scores = logits.reshape(-1)
        else:
            logits = logits.reshape(len(texts), self._labels)
            shifted = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            scores = probs[:, 1 if self.label_index is None else self.label_index]
        return [float(s) for s in scores]

    def _check_truncation(self, model: Any, query: str, texts: Sequence[str]) -> None:
        limit = model.max_seq_length
        if not limit:
            return
        # A word-piece token covers at least one non-space character: shorter pairs cannot overflow.
        long = [t for t in texts if len(query) + len(t) > limit - 3]
        if not long:
            return
        encoded = model.tokenizer([query] * len(long), long, add_special_tokens=True, verbose=False)
        over = sum(len(ids) > limit for ids in encoded["input_ids"])
        if over:
            level = logging.DEBUG if self._warned_truncation else logging.WARNING
            self._warned_truncation = True
            logger.log(
                level,
                "%s: %d (query, text) pair(s) longer than %d tokens were truncated "
                "(further truncations are logged at DEBUG)",
                self.fingerprint,
                over,
                limit,
            )

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        if not texts:
            return Scores()

        def batch(start: int, stop: int) -> list[float | None]:
            idx = [i for i in range(start, stop) if texts[i].strip()]  # empty: not scored
            out: list[float | None] = [None] * (stop - start)
            if idx:
                for i, s in zip(idx, self._predict(query, [texts[i] for i in idx]), strict=True):
                    out[i - start] = s
            return out

        return await score_in_batches(
            len(texts),
            batch,
            batch_size=self.batch_size,
            deadline=deadline,
            lock=self._run_lock,
            source=self.fingerprint,
            prepare=self.load,
        )
