"""Vocabularies (words, characters, labels), casing features and pretrained vectors.

Words are looked up lower-cased (GloVe 6B is uncased) and the casing goes in as its own small feature, so the
model keeps "Apple" vs "apple" without splitting the embedding table. Vocabularies come from the training split
and the vectors file only, never from dev or test.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ner.data.conll import DataError, decode

PAD, UNK = "<pad>", "<unk>"
CASINGS = ("<pad>", "numeric", "mainly_numeric", "all_lower", "all_upper", "init_upper", "has_digit", "other")
_DIGITS = re.compile(r"\d")


@dataclass
class Vocab:
    """A string <-> id table with padding at 0 (and unknown at 1 when `unk`)."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, items, specials=(PAD, UNK), min_count: int = 1) -> Vocab:
        counts = Counter(items)
        return cls(list(specials) + sorted(s for s, c in counts.items() if c >= min_count and s not in specials))

    def __len__(self) -> int:
        return len(self.itos)

    def get(self, item: str) -> int:
        return self.stoi.get(item, 1)


def casing(word: str) -> int:
    """Collobert-style casing class of a word (index into CASINGS)."""
    digits = sum(c.isdigit() for c in word)
    if word.isdigit():
        return 1
    if digits / max(len(word), 1) > 0.5:
        return 2
    if word.islower():
        return 3
    if word.isupper():
        return 4
    if word[:1].isupper():
        return 5
    if digits:
        return 6
    return 7


def normalise(word: str) -> str:
    """The key a word is looked up under: lower-cased."""
    return word.lower()


def word_id(vocab: Vocab, word: str) -> int:
    """Look a word up lower-cased, then with digits mapped to 0 (so unseen numbers share one vector)."""
    key = normalise(word)
    idx = vocab.stoi.get(key)
    if idx is None:
        idx = vocab.stoi.get(_DIGITS.sub("0", key), 1)
    return idx


@dataclass
class EmbeddingsConfig:
    """`model.embeddings` (conf/model/bilstm_crf.yaml): the pretrained vectors a training run starts from."""

    path: str | None = None  # GloVe or word2vec text file; None (or "") = random init of model.word_dim
    freeze: bool = False  # no word vector is fine-tuned: each stays as loaded (or as randomly initialised)

    def __post_init__(self) -> None:  # Hydra reads `path=2024` as an int; an empty path means none, as null does
        self.path = str(self.path) if self.path not in (None, "") else None


@dataclass
class Vectors:
    """Pretrained word vectors read from a GloVe or word2vec text file."""

    words: list[str]
    matrix: np.ndarray  # (num_words, dim) float32

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


def read_vectors(path: str | Path) -> Vectors:
    """Read GloVe text format (word then floats) or word2vec text format (same, after an 'N DIM' header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "vectors file not found (model.embeddings.path)")
    lines = decode(path.read_bytes(), path).splitlines()
    start = 1 if lines and len(lines[0].split()) == 2 and lines[0].replace(" ", "").isdigit() else 0
    words: list[str] = []
    rows: list[str] = []
    dim = 0
    seen: set[str] = set()
    for number, line in enumerate(lines[start:], start=start + 1):
        word, _, values = line.rstrip().partition(" ")
        if not values:
            continue
        n = values.count(" ") + 1
        dim = dim or n
        if n != dim:
            raise DataError(path, number, f"expected {dim} values after the word, found {n}")
        if word in seen:
            continue
        seen.add(word)
        words.append(word)
        rows.append(values)
    if not words:
        raise DataError(path, None, "no vectors found")
    try:
        matrix = np.array(" ".join(rows).split(), dtype=np.float32).reshape(len(words), dim)
    except ValueError as err:
        raise DataError(path, None, f"non-numeric vector value ({err})") from None
    return Vectors(words, matrix)


def build_word_vocab(
    train_tokens: list[list[str]], vectors: Vectors | None, cfg: EmbeddingsConfig | None = None
) -> tuple[Vocab, int]:
    """Train words (lower-cased) first, then every other word of the vectors file; returns (vocab, trainable).

    The first `trainable` rows are fine-tuned; the vectors-only rows stay frozen, so a word first met at test time
    still gets its pretrained vector, and an epoch does not pay for updating 100k rows that no batch touches.
    """
    train = Vocab.build(normalise(w) for sent in train_tokens for w in sent)
    if vectors is None:
        return train, len(train)
    extra = [w for w in dict.fromkeys(vectors.words) if w not in train.stoi]
    return Vocab(train.itos + extra), len(train)


def init_embeddings(vocab: Vocab, vectors: Vectors | None, dim: int, seed: int) -> tuple[np.ndarray, dict]:
    """An embedding matrix for `vocab`: pretrained rows where the vectors have the word, small random ones elsewhere."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(3.0 / dim)
    matrix = rng.uniform(-scale, scale, size=(len(vocab), dim)).astype(np.float32)
    matrix[0] = 0.0
    if vectors is None:
        return matrix, {"pretrained": 0}
    index = {w: i for i, w in enumerate(vectors.words)}
    hits = [(i, index[w]) for i, w in enumerate(vocab.itos) if w in index]
    rows, src = zip(*hits, strict=True) if hits else ((), ())
    matrix[list(rows)] = vectors.matrix[list(src)]
    return matrix, {"pretrained": len(hits)}


def coverage(tokens: list[list[str]], vectors: Vectors | None) -> dict[str, float]:
    """Share of tokens and of word types found in the vectors (lower-cased, digits as 0 as a fallback)."""
    if vectors is None:
        return {}
    known = set(vectors.words)
    counts = Counter(normalise(w) for sent in tokens for w in sent)
    hit = {w for w in counts if w in known or _DIGITS.sub("0", w) in known}
    total = sum(counts.values()) or 1
    return {
        "token_coverage": sum(counts[w] for w in hit) / total,
        "type_coverage": len(hit) / max(len(counts), 1),
    }
