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

Near 400 lines on purpose: the engine and the one description of what it returns (`Tagged`: tags as read, the
model's own tags, invalid sentences, entities and their scores; `LabelMap`: model labels to IOB2 and entity spans)
are built batch by batch together (`_Collector`), and every caller reads that description.

Precision is a per-call choice: "bf16" runs the recurrent encoder on a bfloat16 copy of its weights that the
`Tagger` makes on first use and remakes when the weights change; "fp32" uses the weights themselves, so training,
which scores dev with them every epoch, never sees the copy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ner.data import schemes
from ner.data.batching import bucketed, context_runs
from ner.model.crf import Spans, allowed_transitions
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
        return self.tag_sentences(sentences, documents, precision).tags(self.labels)

    def tag_sentences(
        self,
        sentences: Sequence[list[str]],
        documents: Sequence[int] | None = None,
        precision: str = "fp32",
        scores: bool = False,
    ) -> Tagged:
        """`tag` for a list of token lists (what training's scoring passes)."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        words = [w for sent in sentences for w in sent]
        return self.tag(words, lengths, None if documents is None else _run_lengths(documents), precision, scores)

    def tag(
        self,
        words: list[str],
        lengths: np.ndarray,
        doc_sents: Sequence[int] | None = None,
        precision: str = "fp32",
        scores: bool = False,
    ) -> Tagged:
        """Tags and entities of every token of `words`, split into sentences by `lengths`; `doc_sents` gives the
        sentences per document (document context), None: every sentence stands alone. With `scores`, each entity
        also gets its probability under the model (`CRF.span_probs`, at the model's calibrated temperature)."""
        if not words:
            return Tagged.empty(lengths, scores)
        dtype = DTYPES[resolve_precision(precision, str(self.device))]
        was_training = self.tagger.training
        self.tagger.eval()
        try:
            with torch.inference_mode():
                tick = time.perf_counter()
                form_of, features = self._features(words)
                self.seconds["features"] += time.perf_counter() - tick
                seq_lengths = self._sequence_lengths(lengths, doc_sents)
                return self._predict(form_of, features, seq_lengths, lengths, dtype, scores)
        finally:
            self.tagger.train(was_training)

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

    def _predict(
        self, form_of: np.ndarray, features: torch.Tensor, seq_lengths: np.ndarray, lengths: np.ndarray, dtype, scores
    ) -> Tagged:
        """Each batch decoded at once; its sentences are read into IOB2 and entities (and scored) while its tag
        scores are at hand."""
        out = _Collector(len(form_of), lengths)
        chain = self.tagger.chain if scores else None
        for positions, emissions, mask in self._batches(form_of, features, seq_lengths, dtype):
            tick = time.perf_counter()
            valid = mask.cpu().numpy()
            best = self.tagger.best_ids(emissions, mask).cpu().numpy()
            batch = out.add(positions, best[valid], self.labels)
            self.seconds["decode"] += time.perf_counter() - tick
            if chain is not None:
                tick = time.perf_counter()
                rows, cols = np.nonzero(valid)
                spans = self.labels.model_spans(batch.iob2, batch.first, batch.stop, rows, cols, self.device)
                out.scores.append(chain.span_probs(emissions, mask, spans, self.tagger.temperature).cpu().numpy())
                self.seconds["scores"] += time.perf_counter() - tick
        return out.result(scores)

    def emissions(
        self, sentences: Sequence[list[str]], documents: Sequence[int] | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """(flat token positions of the batch's real tokens, tag scores (B, T, K), mask (B, T)) batch by batch, in
        float32: what calibration fits its temperature on (`ner.evaluation.calibration`)."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        words = [w for sent in sentences for w in sent]
        if not words:
            return
        was_training = self.tagger.training
        self.tagger.eval()
        try:
            with torch.inference_mode():
                form_of, features = self._features(words)
                seq_lengths = self._sequence_lengths(lengths, None if documents is None else _run_lengths(documents))
                yield from self._batches(form_of, features, seq_lengths, torch.float32)
        finally:
            self.tagger.train(was_training)

    def _batches(
        self, form_of: np.ndarray, features: torch.Tensor, seq_lengths: np.ndarray, dtype
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Length-bucketed batches of the sequences the model reads, each embedded and encoded at once."""
        first = token_bounds(seq_lengths)[:-1]
        for index in bucketed(seq_lengths.tolist(), self.batch_size, max_tokens=self.max_tokens):
            index = np.asarray(index)
            index = index[seq_lengths[index] > 0]
            if not len(index):
                continue
            tick = time.perf_counter()
            lens = seq_lengths[index]
            steps = np.arange(int(lens.max()))
            valid = steps < lens[:, None]
            where = np.minimum(first[index, None] + steps, len(form_of) - 1)
            forms = torch.from_numpy(np.where(valid, form_of[where], 0)).to(self.device)
            x = features.index_select(0, forms.reshape(-1)).view(*forms.shape, -1)  # (B, T, D); faster than x[forms]
            emissions = self.tagger.score(x, torch.from_numpy(lens), dtype)
            self.seconds["model"] += time.perf_counter() - tick
            yield where[valid], emissions, torch.from_numpy(valid).to(self.device)


@dataclass
class Tagged:
    """What the engine says about a flat list of tokens (split into sentences by the caller's lengths).

    iob2: IOB2 label ids of every token; a sentence the model's scheme forbids (possible only with a softmax head)
        is read the way conlleval reads it. What `ner.tag` writes and the default (conlleval) score counts.
    own: the model's own tags mapped label by label to IOB2 (BIOES E- -> I-, S- -> B-), never repaired: what
        seqeval's strict mode is scored on, so an invalid sequence costs there what it should.
    invalid: indices of the sentences whose tags the model's scheme forbids (always none for the constrained CRF).
    first, stop: each entity of `iob2`, by its first token and its end (exclusive), in token order.
    score: each entity's probability (`CRF.span_probs`), or None when scores were not asked for.
    """

    iob2: np.ndarray
    own: np.ndarray
    invalid: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    score: np.ndarray | None
    lengths: np.ndarray  # tokens per sentence

    @classmethod
    def empty(cls, lengths: np.ndarray, scores: bool) -> Tagged:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, none, none, none, np.zeros(0, dtype=np.float32) if scores else None, lengths)

    def tags(self, labels: LabelMap, own: bool = False) -> list[list[str]]:
        """IOB2 tag strings per sentence: the tags as read (default), or the model's `own`."""
        names = labels.names(self.own if own else self.iob2)
        bounds = token_bounds(self.lengths).tolist()
        return [names[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def at_least(self, min_score: float, labels: LabelMap) -> Tagged:
        """Only the entities scored at or above `min_score`; the tokens of the others become O."""
        if self.score is None or min_score <= 0 or not len(self.score):
            return self
        keep = self.score >= min_score
        iob2, own = self.iob2.copy(), self.own.copy()
        for a, b in zip(self.first[~keep].tolist(), self.stop[~keep].tolist(), strict=True):
            iob2[a:b] = own[a:b] = labels.iob2_id["O"]
        return replace(self, iob2=iob2, own=own, first=self.first[keep], stop=self.stop[keep], score=self.score[keep])


class _Collector:
    """Fills a `Tagged` batch by batch: the batches come in length order, the result is in token order."""

    def __init__(self, tokens: int, lengths: np.ndarray):
        self.own = np.zeros(tokens, dtype=np.int64)
        self.iob2 = np.zeros(tokens, dtype=np.int64)
        self.sentence_of = np.repeat(np.arange(len(lengths)), lengths)
        self.lengths = lengths
        self.firsts: list[np.ndarray] = []
        self.stops: list[np.ndarray] = []
        self.invalid: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def add(self, positions: np.ndarray, ids: np.ndarray, labels: LabelMap) -> _Batch:
        """A batch's tokens (global positions, whole sentences in order within each row) and model label ids."""
        self.own[positions] = labels.direct[ids]
        sentence = self.sentence_of[positions]
        starts = np.flatnonzero(np.diff(sentence, prepend=-1))
        lens = np.diff(np.append(starts, len(sentence)))
        iob2, bad = labels.read(ids, lens)
        self.iob2[positions] = iob2
        self.invalid.append(sentence[starts[bad]])
        first, stop = labels.spans(iob2, lens)
        self.firsts.append(positions[first])
        self.stops.append(positions[stop - 1] + 1)
        return _Batch(iob2, first, stop)

    def result(self, scores: bool) -> Tagged:
        first = np.concatenate(self.firsts) if self.firsts else np.zeros(0, dtype=np.int64)
        order = np.argsort(first, kind="stable")
        stop = np.concatenate(self.stops)[order] if self.stops else first
        score = None
        if scores:
            score = np.concatenate(self.scores)[order] if self.scores else np.zeros(0, dtype=np.float32)
        invalid = np.sort(np.concatenate(self.invalid)) if self.invalid else np.zeros(0, dtype=np.int64)
        return Tagged(self.iob2, self.own, invalid, first[order], stop, score, self.lengths)


@dataclass
class _Batch:
    iob2: np.ndarray  # IOB2 ids of the batch's tokens, flat in row order
    first: np.ndarray  # entities, as positions in that flat order
    stop: np.ndarray


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
        model_id = {tag: i for i, tag in enumerate(labels)}

        # per IOB2 B- label: the model's ids of that type's B-, I-, E-, S- (an entity written in the model's scheme)
        def of_type(prefix: str) -> np.ndarray:
            return np.asarray([model_id.get(f"{prefix}{t[1:]}", -1) if t[0] == "B" else -1 for t in self.iob2])

        self.begin_of, self.inside_of, self.end_of, self.single_of = map(of_type, "BIES")
        start, end, trans = allowed_transitions(scheme, labels)
        self.start_ok, self.end_ok, self.trans_ok = start.numpy(), end.numpy(), trans.numpy()
        self.is_begin = np.asarray([t.startswith("B-") for t in self.iob2])
        self.is_inside = np.asarray([t.startswith("I-") for t in self.iob2])
        self.types = [schemes.split_tag(t)[1] for t in self.iob2]

    def names(self, ids: np.ndarray) -> list[str]:
        return list(map(self.iob2.__getitem__, ids.tolist()))

    def read(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(IOB2 ids of model label ids, indices of the sentences the scheme forbids); those sentences are read
        like conlleval reads them."""
        if not len(ids):
            return ids, np.zeros(0, dtype=np.int64)
        bad = self._invalid_sentences(ids, lengths)
        out = self.direct[ids]
        bounds = token_bounds(lengths)
        for s in bad.tolist():
            a, b = bounds[s], bounds[s + 1]
            tags = schemes.convert([self.model_labels[i] for i in ids[a:b].tolist()], "iob2")
            out[a:b] = [self.iob2_id[t] for t in tags]
        return out, bad

    def model_spans(
        self, iob2: np.ndarray, first: np.ndarray, stop: np.ndarray, rows: np.ndarray, cols: np.ndarray, device
    ) -> Spans:
        """The entities `first`..`stop` of flat IOB2 ids as the model's own tags (B- I-... or B- I-... E-, S-),
        at (`rows`, `cols`) of the batch the flat positions came from: what `CRF.span_probs` scores."""
        begin = iob2[first]
        length = stop - first
        width = int(length.max()) if len(length) else 1
        tags = np.repeat(self.inside_of[begin][:, None], width, axis=1)
        tags[:, 0] = self.begin_of[begin]
        if self.scheme == "bioes":
            multi = np.flatnonzero(length > 1)
            tags[multi, length[multi] - 1] = self.end_of[begin[multi]]
            tags[length == 1, 0] = self.single_of[begin[length == 1]]
            stop_before = np.full(len(first), -1)
        else:
            stop_before = self.inside_of[begin]
        tags[np.arange(width)[None, :] >= length[:, None]] = -1
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)  # noqa: E731
        return Spans(as_tensor(rows[first]), as_tensor(cols[first]), as_tensor(tags), as_tensor(stop_before))

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
