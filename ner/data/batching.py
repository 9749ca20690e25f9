"""Sentences -> tensors: a per-corpus table of distinct word forms, and length-bucketed batches.

Each distinct form (cased string) is looked up once: its word id, casing class and characters live in a form
table, and a sentence is just a list of form ids. A batch then gathers rows of that table, and the character
encoder runs once per distinct form in the batch rather than once per token.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ner.data.vocab import Vocab, casing, word_id

MAX_WORD_CHARS = 40  # longer tokens (URLs, hashes) are cut for the character encoder only


@dataclass
class Featurizer:
    """The vocabularies a model was trained with, and the encoding of tokens and tags through them."""

    words: Vocab
    chars: Vocab
    labels: Vocab  # tags in the training scheme; no padding entry: id 0 is "O"
    trainable_words: int = 0  # words[:trainable_words] are fine-tuned, the rest (vectors only) frozen; 0 = all
    training_words: int = 0  # words[:training_words] occur in the training data (error analysis); 0 = not known
    _char_table: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def encode(
        self, sentences: list[list[str]], tags: list[list[str]] | None = None, documents: list[int] | None = None
    ) -> Encoded:
        """Form ids per sentence; `documents` (one id per sentence) lets the model read sentences in context."""
        table: dict[str, int] = {"": 0}
        form_ids = [[table.setdefault(tok, len(table)) for tok in sent] for sent in sentences]
        forms = self.form_table(list(table)[1:])
        tag_ids = None
        if tags is not None:
            tag_ids = [[self.labels.stoi.get(t, 0) for t in seq] for seq in tags]
        return Encoded(
            forms=form_ids,
            form_word=forms.words,
            form_case=forms.cases,
            form_chars=forms.chars,
            form_len=forms.char_lens,
            tags=tag_ids,
            documents=documents,
        )

    def form_table(self, forms: list[str]) -> FormTable:
        """Word id, casing class and character ids of each form, row 0 being the padding form (all zeros).

        Training (`encode`) and inference (`ner.model.engine`) both featurise through here, so a form gets the
        same ids in both. Characters go through a code point -> id array: one numpy index per character.
        """
        cut = [f[:MAX_WORD_CHARS] for f in forms]
        lens = np.fromiter(map(len, cut), dtype=np.int64, count=len(cut))
        codes = np.frombuffer("".join(cut).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        chars = np.zeros((len(cut) + 1, max(1, int(lens.max(initial=0)))), dtype=np.int64)
        rows = np.repeat(np.arange(1, len(cut) + 1), lens)
        cols = np.arange(len(codes)) - np.repeat(np.cumsum(lens) - lens, lens)
        chars[rows, cols] = self._char_ids()[codes]
        return FormTable(
            words=torch.tensor([0, *(word_id(self.words, f) for f in forms)]),
            cases=torch.tensor([0, *map(casing, forms)]),
            chars=torch.from_numpy(chars),
            char_lens=torch.from_numpy(np.concatenate([[0], lens])),
        )

    def _char_ids(self) -> np.ndarray:
        """Code point -> character id (1 = unknown) for every Unicode code point, built once per featurizer."""
        if self._char_table is None:
            table = np.ones(0x110000, dtype=np.int64)
            for char, i in self.chars.stoi.items():
                if len(char) == 1:
                    table[ord(char)] = i
            self._char_table = table
        return self._char_table

    def to_json(self) -> dict:
        return {
            "words": self.words.itos,
            "chars": self.chars.itos,
            "labels": self.labels.itos,
            "trainable_words": self.trainable_words,
            "training_words": self.training_words,
        }

    @classmethod
    def from_json(cls, data: dict) -> Featurizer:
        vocabs = (Vocab(data["words"]), Vocab(data["chars"]), Vocab(data["labels"]))
        return cls(*vocabs, data["trainable_words"], data.get("training_words", 0))


@dataclass
class FormTable:
    """The features of F distinct forms (row 0: padding): what the model's embeddings read."""

    words: torch.Tensor  # (F,) word ids
    cases: torch.Tensor  # (F,) casing classes
    chars: torch.Tensor  # (F, L) character ids, 0-padded
    char_lens: torch.Tensor  # (F,) characters per form


@dataclass
class Encoded:
    """One list of sentences as form ids plus the form table they index."""

    forms: list[list[int]]
    form_word: torch.Tensor  # (F,)
    form_case: torch.Tensor  # (F,)
    form_chars: torch.Tensor  # (F, L)
    form_len: torch.Tensor  # (F,)
    tags: list[list[int]] | None = None
    documents: list[int] | None = None  # document id of each sentence; None: every sentence stands alone

    def __len__(self) -> int:
        return len(self.forms)

    def in_context(self, max_tokens: int) -> tuple[Encoded, list[range]]:
        """The sentences joined into runs of consecutive sentences of one document (`context_runs`), each run one
        sequence of the returned Encoded, plus the runs, to split its predictions back per sentence."""
        lengths = [len(f) for f in self.forms]
        runs = context_runs(lengths, self.documents or range(len(lengths)), max_tokens)
        joined = [[f for i in run for f in self.forms[i]] for run in runs]
        tags = None if self.tags is None else [[t for i in run for t in self.tags[i]] for run in runs]
        return Encoded(joined, self.form_word, self.form_case, self.form_chars, self.form_len, tags), runs

    def batch(self, index: list[int]) -> Batch:
        lengths = torch.tensor([len(self.forms[i]) for i in index])
        forms = torch.zeros(len(index), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(index):
            forms[row, : lengths[row]] = torch.tensor(self.forms[i])
        uniq, inverse = torch.unique(forms, return_inverse=True)
        tags = None
        if self.tags is not None:
            tags = torch.zeros_like(forms)
            for row, i in enumerate(index):
                tags[row, : lengths[row]] = torch.tensor(self.tags[i])
        return Batch(
            words=self.form_word[forms],
            cases=self.form_case[forms],
            chars=self.form_chars[uniq][:, : max(1, int(self.form_len[uniq].max()))],
            char_index=inverse,
            lengths=lengths,
            mask=forms > 0,
            tags=tags,
            index=index,
        )


@dataclass
class Batch:
    words: torch.Tensor  # (B, T) word ids
    cases: torch.Tensor  # (B, T) casing ids
    chars: torch.Tensor  # (U, L) characters of the U distinct forms in the batch
    char_index: torch.Tensor  # (B, T) row of `chars` for each token
    lengths: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T) true on real tokens
    tags: torch.Tensor | None  # (B, T) gold tag ids
    index: list[int]  # positions of these sentences in the Encoded

    def to(self, device: torch.device) -> Batch:
        move = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor) and k != "lengths"}
        return Batch(**{**vars(self), **move})


def context_runs(lengths: Sequence[int], documents: Sequence[int], max_tokens: int) -> list[range]:
    """Consecutive sentences of one document, as many as fit in `max_tokens` tokens (a longer sentence alone).

    A recurrent encoder that reads a sentence with its neighbours sees who "Jordan" played against in the line
    above; greedy packing keeps each token in exactly one sequence, so an epoch costs what it did sentence by
    sentence. `max_tokens=0` gives one run per sentence.
    """
    runs: list[range] = []
    start, tokens = 0, 0
    for i, n in enumerate(lengths):
        if i > start and (documents[i] != documents[start] or tokens + n > max_tokens):
            runs.append(range(start, i))
            start, tokens = i, 0
        tokens += n
    if len(lengths):
        runs.append(range(start, len(lengths)))
    return runs


def bucketed(
    lengths: list[int], batch_size: int, rng: random.Random | None = None, max_tokens: int = 0
) -> list[list[int]]:
    """Batches of sentence indices with near-equal lengths: little padding, often none, so little wasted work.

    With `rng` (training) ties are broken at random and the batch order is shuffled; without it (inference) the
    order is longest first. `max_tokens` caps batch_size x longest length, so one very long sentence cannot
    blow up memory.
    """
    if rng is not None:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    else:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, lengths[i])
        too_many = max_tokens and current and longest_if * (len(current) + 1) > max_tokens
        if len(current) == batch_size or too_many:
            batches.append(current)
            current, longest_if = [], lengths[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches
