"""Tiny models for mechanics tests of the in-process first stages, built and saved locally.

No pretrained cross-encoder installs on this machine (and nothing may be downloaded), so the tests
build one: a 2-layer BERT with a 32-wide hidden state on the all-MiniLM-L6-v2 word-piece vocabulary,
trained for a few seconds to score texts holding an ON_TOPIC word above texts holding an
OFF_TOPIC word (whatever the query: a matching task does not train in seconds). It is a
mechanics fixture (loading, batching, heads, truncation, deadlines), not a relevance model.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

WORDS = [
    "apple", "river", "engine", "castle", "violin", "planet", "forest", "bridge",
    "coffee", "tiger", "glacier", "rocket", "garden", "copper", "island", "lantern",
]  # fmt: skip
FILLER = "the a of and on with near from under over small large old new red blue".split()
ON_TOPIC, OFF_TOPIC = WORDS[:8], WORDS[8:]
QUERIES = ["which one", "find the text", "what is relevant"]
MAX_LEN = 64


def _tokenizer_dir(tmp: Path) -> Path:
    from llmrerank.models import minilm_path

    src = minilm_path()
    out = tmp / "tokenizer"
    out.mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


def _sentence(rng: random.Random, word: str | None) -> str:
    words = rng.choices(FILLER, k=rng.randint(4, 9))
    if word is not None:
        words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def build_tiny_cross_encoder(path: Path, *, num_labels: int, max_steps: int = 500) -> Path:
    """A tiny BERT sequence classifier trained on "does the text hold an ON_TOPIC word"."""
    tok_dir = _tokenizer_dir(path.parent / f"tok-{path.name}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LEN,
        num_labels=num_labels,
    )
    model = transformers.BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(0)
    model.train()
    recent: list[float] = []
    for _ in range(max_steps):
        queries, docs, labels = [], [], []
        for _ in range(16):
            positive = rng.random() < 0.5
            queries.append(rng.choice(QUERIES))
            docs.append(_sentence(rng, rng.choice(ON_TOPIC if positive else OFF_TOPIC)))
            labels.append(1 if positive else 0)
        batch = tokenizer(queries, docs, padding=True, truncation=True, return_tensors="pt")
        target = torch.tensor(labels, dtype=torch.float if num_labels == 1 else torch.long)
        out = model(**batch)
        if num_labels == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                out.logits.squeeze(-1), target
            )
        else:
            loss = torch.nn.functional.cross_entropy(out.logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        recent = [*recent[-19:], loss.item()]
        if len(recent) == 20 and sum(recent) / 20 < 0.08:
            break
    else:
        raise RuntimeError(f"the tiny cross-encoder did not learn (recent loss {recent[-1]:.3f})")
    model.eval()
    tokenizer.model_max_length = MAX_LEN
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def build_tiny_bi_encoder(path: Path) -> Path:
    """A tiny (untrained) sentence-transformers bi-encoder: BERT + mean pooling."""
    from sentence_transformers import SentenceTransformer, models

    tok_dir = _tokenizer_dir(path.parent / f"tok-{path.name}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LEN,
    )
    bert_dir = path.parent / f"bert-{path.name}"
    transformers.BertModel(config).save_pretrained(str(bert_dir))
    tokenizer.save_pretrained(str(bert_dir))
    word = models.Transformer(str(bert_dir), max_seq_length=MAX_LEN)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce1") / "model", num_labels=1)


@pytest.fixture(scope="session")
def tiny_cross_encoder_2labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce2") / "model", num_labels=2)


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bi_encoder(tmp_path_factory.mktemp("bi") / "model")
