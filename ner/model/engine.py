"""The one inference engine: token lists in, IOB2 tags out, fast. Everything that runs a trained model calls it:
training's dev and test scores, `ner.tag` (in-process and in its worker pool), the MLflow pyfunc, Spark workers and
the ensemble benchmark, so a score and a tagged file always come from the same code.

Why it is fast on many sentences at once:

- every distinct word form of a call is featurised once (word vector, casing, characters through the char
  encoder: `Tagger.form_features`) into one table, and a batch is a single gather from it;
- sentences are sorted by length and batched (`ner.data.batching.bucketed`), so batches hold near-equal lengths,
  and run padded, never packed (`ner.model.recurrent.run_padded`: the fast oneDNN path);
- Viterbi runs on the whole batch; the mapping to IOB2 is numpy over all tokens (a sentence the tag scheme would
  not allow, possible only with a softmax head, goes through `schemes.convert`, which reads it the conlleval way).

Precision is a per-call choice: "bf16" runs the recurrent encoder on a bfloat16 copy of its weights that the
`Tagger` makes on first use and remakes when the weights change; "fp32" uses the weights themselves, so training,
which scores dev with them every epoch, never sees the copy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ner.data import schemes
from ner.data.batching import bucketed, context_runs
from ner.model.crf import allowed_transitions
from ner.model.tagger import Tagger

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Engine:
    """A trained tagger (or anything with its inference methods, e.g. `ner.model.ensemble.Averaged`) plus the
    batching settings.

    Attributes:
        tagger: The model. It is put in eval mode for each call and back in the mode it was in after.
        batch_size: Most sentences per batch.
        max_tokens: Most padded tokens (sentences x longest) per batch: bounds memory on long sentences.
        device: Torch device of the model.
        labels: The model's labels and their IOB2 counterparts (`LabelMap`).
        seconds: Time per stage (features, model, decode), summed over calls: where tagging spends its time.
    """

    def __init__(self, tagger: Tagger, batch_size: int = 512, max_tokens: int = 20_000, device: str = "cpu"):
        self.tagger = tagger.to(device)
        self.batch_size, self.max_tokens, self.device = batch_size, max_tokens, torch.device(device)
        self.labels = LabelMap(tagger.featurizer.labels.itos, tagger.scheme)
        self.seconds: Counter = Counter()

    def predict(
        self, sentences: Sequence[list[str]], documents: Sequence[int] | None = None, precision: str = "fp32"
    ) -> list[list[str]]:
        """IOB2 tags of every sentence, in order. `documents` (one id per sentence, consecutive sentences of a
        document sharing it) lets a model trained with document context read each sentence with its neighbours,
        as it was trained; the tags still come back per sentence, so scores count sentences as without context."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        words = [w for sent in sentences for w in sent]
        ids = self.iob2_ids(words, lengths, None if documents is None else _run_lengths(documents), precision)
        tags = self.labels.names(ids)
        bounds = token_bounds(lengths).tolist()
        return [tags[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def iob2_ids(
        self, words: list[str], lengths: np.ndarray, doc_sents: Sequence[int] | None = None, precision: str = "fp32"
    ) -> np.ndarray:
        """IOB2 label ids (`self.labels.iob2`) of every token of `words`, split into sentences by `lengths`;
        `doc_sents` gives the sentences per document (document context), None: every sentence stands alone."""
        if not words:
            return np.zeros(0, dtype=np.int64)
        dtype = DTYPES[resolve_precision(precision, str(self.device))]
        was_training = self.tagger.training
        self.tagger.eval()
        try:
            with torch.inference_mode():
                tick = time.perf_counter()
                form_of, features = self._features(words)
                self.seconds["features"] += time.perf_counter() - tick
                model_ids = self._predict(form_of, features, self._sequence_lengths(lengths, doc_sents), dtype)
        finally:
            self.tagger.train(was_training)
        tick = time.perf_counter()
        out = self.labels.to_iob2(model_ids, lengths)
        self.seconds["decode"] += time.perf_counter() - tick
        return out

    def _sequence_lengths(self, lengths: np.ndarray, doc_sents: Sequence[int] | None) -> np.ndarray:
        """Tokens per sequence the model reads: one sentence each, or runs of them (`batching.context_runs`)."""
        context = self.tagger.cfg.context_tokens
        if not context or doc_sents is None or len(doc_sents) == len(lengths):
            return lengths
        documents = np.repeat(np.arange(len(doc_sents)), doc_sents).tolist()
        runs = context_runs(lengths.tolist(), documents, context)
        return np.add.reduceat(lengths, [r.start for r in runs])

    def _features(self, words: list[str]) -> tuple[np.ndarray, torch.Tensor]:
        """(form id of every token, feature table (forms + 1, D)); row 0 is the padding form."""
        forms = list(dict.fromkeys(words))
        index = dict(zip(forms, range(1, len(forms) + 1), strict=True))
        form_of = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
        return form_of, self.tagger.form_features(self.tagger.featurizer.form_table(forms), self.device)

    def _predict(self, form_of: np.ndarray, features: torch.Tensor, lengths: np.ndarray, dtype) -> np.ndarray:
        """Model label ids of every token: length-bucketed batches, each embedded, encoded and decoded at once."""
        out = np.zeros(len(form_of), dtype=np.int64)
        first = token_bounds(lengths)[:-1]
        for index in bucketed(lengths.tolist(), self.batch_size, max_tokens=self.max_tokens):
            index = np.asarray(index)
            index = index[lengths[index] > 0]
            if not len(index):
                continue
            tick = time.perf_counter()
            lens = lengths[index]
            steps = np.arange(int(lens.max()))
            valid = steps < lens[:, None]
            where = np.minimum(first[index, None] + steps, len(form_of) - 1)
            forms = torch.from_numpy(np.where(valid, form_of[where], 0)).to(self.device)
            x = features.index_select(0, forms.reshape(-1)).view(*forms.shape, -1)  # (B, T, D); faster than x[forms]
            emissions = self.tagger.score(x, torch.from_numpy(lens), dtype)
            tock = time.perf_counter()
            best = self.tagger.best_ids(emissions, torch.from_numpy(valid).to(self.device)).cpu().numpy()
            out[where[valid]] = best[valid]
            self.seconds["model"] += tock - tick
            self.seconds["decode"] += time.perf_counter() - tock
        return out


def resolve_precision(precision: str, device: str) -> str:
    """ "auto" -> "bf16" on a CPU with native bfloat16 (AVX512-BF16 or AMX), where it is faster end to end at the
    same test F1 (`python -m benchmarks.precision`); "fp32" elsewhere, where bf16 would be emulated and slow."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if torch.device(device).type == "cpu" and native else "fp32"


class LabelMap:
    """Model label ids -> IOB2 label ids, plus what an entity finder needs to know about each IOB2 label."""

    def __init__(self, labels: list[str], scheme: str):
        self.scheme, self.model_labels = scheme, labels
        self.iob2 = schemes.labels_for(schemes.entity_types(labels), "iob2")
        self.iob2_id = {tag: i for i, tag in enumerate(self.iob2)}
        # per-label mapping, exact for sequences the scheme allows (BIOES E- -> I-, S- -> B-)
        prefix_map = {"O": "O", "B": "B", "I": "I", "E": "I", "S": "B"}
        self.direct = np.asarray([self.iob2_id[_retag(tag, prefix_map)] for tag in labels], dtype=np.int64)
        self.fast = scheme in ("iob2", "bioes")
        start, end, trans = allowed_transitions(scheme, labels)
        self.start_ok, self.end_ok, self.trans_ok = start.numpy(), end.numpy(), trans.numpy()
        self.is_begin = np.asarray([t.startswith("B-") for t in self.iob2])
        self.is_inside = np.asarray([t.startswith("I-") for t in self.iob2])
        self.types = [schemes.split_tag(t)[1] for t in self.iob2]

    def names(self, ids: np.ndarray) -> list[str]:
        return list(map(self.iob2.__getitem__, ids.tolist()))

    def to_iob2(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """IOB2 ids of model label ids; sentences the scheme forbids are read like conlleval reads them."""
        if not len(ids):
            return ids
        bad = self._invalid_sentences(ids, lengths) if self.fast else np.flatnonzero(lengths)
        out = self.direct[ids]
        bounds = token_bounds(lengths)
        for s in bad.tolist():
            a, b = bounds[s], bounds[s + 1]
            tags = schemes.convert([self.model_labels[i] for i in ids[a:b].tolist()], "iob2")
            out[a:b] = [self.iob2_id[t] for t in tags]
        return out

    def _invalid_sentences(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        bounds = token_bounds(lengths)
        nonempty = lengths > 0
        ok = np.ones(len(ids), dtype=bool)  # per token: the step into it (or the start) is allowed
        ok[1:] = self.trans_ok[ids[:-1], ids[1:]]
        firsts, lasts = bounds[:-1][nonempty], bounds[1:][nonempty] - 1
        ok[firsts] = self.start_ok[ids[firsts]]
        sent_of = np.repeat(np.arange(len(lengths)), lengths)
        bad = np.zeros(len(lengths), dtype=bool)
        bad[sent_of[~ok]] = True
        bad[np.flatnonzero(nonempty)[~self.end_ok[ids[lasts]]]] = True
        return np.flatnonzero(bad)

    def spans(self, iob2: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first token, end token exclusive) of every entity of valid IOB2 ids, flat over all sentences."""
        continues = self.is_inside[iob2]
        continues[token_bounds(lengths)[:-1][lengths > 0]] = False  # a sentence start never continues an entity
        first = np.flatnonzero(self.is_begin[iob2])
        stops = np.append(np.flatnonzero(~continues), len(iob2))
        return first, stops[np.searchsorted(stops, first, side="right")]


def token_bounds(lengths: np.ndarray) -> np.ndarray:
    """Start of every sentence in the flat token list, plus the total at the end."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _run_lengths(documents: Sequence[int]) -> list[int]:
    """Sentences per document from one document id per sentence (a new document wherever the id changes)."""
    out: list[int] = []
    previous = object()
    for doc in documents:
        if out and doc == previous:
            out[-1] += 1
        else:
            out.append(1)
        previous = doc
    return out


def _retag(tag: str, prefix_map: dict[str, str]) -> str:
    prefix, typ = schemes.split_tag(tag)
    return "O" if prefix == "O" else f"{prefix_map[prefix]}-{typ}"
