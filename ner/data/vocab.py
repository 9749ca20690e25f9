"""Vocabularies (words, characters, labels), casing features, and the embedding matrix a model starts from.

Words are looked up lower-cased (GloVe 6B is uncased) and the casing goes in as its own small feature, so the
model keeps "Apple" vs "apple" without splitting the embedding table. Vocabularies come from the training split
and the vectors file only, never from dev or test. Reading vectors files (formats, cache) is ner/data/vectors.py.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ner.config import ConfigError
from ner.data.vectors import DEFAULT_CACHE, Vectors
from ner.data.vectors import read_vectors as read_vectors  # re-exported: ner/training/pipeline.py reads it here

PAD, UNK = "<pad>", "<unk>"
CASINGS = ("<pad>", "numeric", "mainly_numeric", "all_lower", "all_upper", "init_upper", "has_digit", "other")
_DIGITS = re.compile(r"\d")
KEEP = 200_000  # model.embeddings.keep: keeps the shipped 104,617-word file whole, 840B's 2.2M words to 0.24 GB


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

    path: str | None = None  # GloVe/word2vec/fastText text, .gz of either, or word2vec binary; None = random init
    freeze: bool = False  # no word vector is fine-tuned: each stays as loaded (or as randomly initialised)
    keep: int | str = KEEP  # vectors the model carries: all | train | K (training words + the file's first K)
    cache_dir: str | None = DEFAULT_CACHE  # parsed vectors, keyed by the file's path, size, mtime, inode; None = off

    def __post_init__(self) -> None:  # Hydra reads `path=2024` as an int; an empty path means none, as null does
        self.path = str(self.path) if self.path not in (None, "") else None
        self.cache_dir = str(self.cache_dir) if self.cache_dir not in (None, "") else None
        if isinstance(self.keep, str) and self.keep.isdigit():
            self.keep = int(self.keep)
        if isinstance(self.keep, str) and self.keep not in ("all", "train"):
            raise ConfigError(f"model.embeddings.keep={self.keep!r} is not all, train or a whole number")
        if isinstance(self.keep, int) and self.keep < 0:
            raise ConfigError(f"model.embeddings.keep={self.keep} must be >= 0")

    def limit(self, num_vectors: int) -> int:
        """How many of the vectors file's first rows the vocabulary takes in (training words come on top)."""
        return num_vectors if self.keep == "all" else 0 if self.keep == "train" else min(self.keep, num_vectors)


def build_word_vocab(
    train_tokens: list[list[str]], vectors: Vectors | None, cfg: EmbeddingsConfig | None = None
) -> tuple[Vocab, int]:
    """Train words (lower-cased) first, then the other words of the vectors file that `cfg.keep` keeps (all of
    them without a config); returns (vocab, trainable).

    The first `trainable` rows are fine-tuned; the vectors-only rows stay frozen, so a word first met at test time
    still gets its pretrained vector, and an epoch does not pay for updating 100k rows that no batch touches.
    Vectors files list the most frequent words first, so `keep: K` keeps the K words a new text most likely has;
    words of dev and test are never looked at, as for every vocabulary.
    """
    train = Vocab.build(normalise(w) for sent in train_tokens for w in sent)
    if vectors is None:
        return train, len(train)
    limit = (cfg or EmbeddingsConfig(keep="all")).limit(len(vectors.words))
    extra = [w for w in dict.fromkeys(vectors.words[:limit]) if w not in train.stoi]
    return Vocab(train.itos + extra), len(train)


def init_embeddings(vocab: Vocab, vectors: Vectors | None, dim: int, seed: int) -> tuple[np.ndarray, dict]:
    """An embedding matrix for `vocab`: pretrained rows where the vectors have the word, small random ones elsewhere.

    Memory: the matrix is allocated once (float32) and random values are drawn only for the leading rows that need
    them, in blocks; they are the values one draw of the whole matrix would give (the same numbers as before the
    vectors reader was rewritten), so a seed keeps meaning the same model. Pretrained rows come from
    `Vectors.take`, which reads a cached (memory-mapped) table block by block.
    """
    rng = np.random.default_rng(seed)
    scale = np.sqrt(3.0 / dim)
    matrix = np.empty((len(vocab), dim), dtype=np.float32)
    rows, src = _pretrained_rows(vocab, vectors)
    missing = np.ones(len(vocab), dtype=bool)
    missing[rows] = False
    drawn = int(np.flatnonzero(missing).max()) + 1 if missing.any() else 0
    step = max(1, (8 << 20) // (8 * dim))  # rows per block of float64 draws: 8 MB at a time
    for lo in range(0, drawn, step):
        hi = min(drawn, lo + step)
        matrix[lo:hi] = rng.uniform(-scale, scale, size=(hi - lo, dim))
    matrix[0] = 0.0
    if vectors is None:
        return matrix, {"pretrained": 0}
    vectors.take(src, matrix, rows)
    return matrix, {"pretrained": len(rows), "vectors_in_file": len(vectors.words), "vectors_kept": len(vocab)}


def _pretrained_rows(vocab: Vocab, vectors: Vectors | None) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary rows, vectors rows) of every word both have."""
    if vectors is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    index = vectors.index
    hits = [(i, index[w]) for i, w in enumerate(vocab.itos) if w in index]
    pairs = np.array(hits, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def coverage(tokens: list[list[str]], vectors: Vectors | None) -> dict[str, float]:
    """Share of tokens and of word types found in the vectors (lower-cased, digits as 0 as a fallback)."""
    if vectors is None:
        return {}
    known = vectors.index
    counts = Counter(normalise(w) for sent in tokens for w in sent)
    hit = {w for w in counts if w in known or _DIGITS.sub("0", w) in known}
    total = sum(counts.values()) or 1
    return {
        "token_coverage": sum(counts[w] for w in hit) / total,
        "type_coverage": len(hit) / max(len(counts), 1),
    }
