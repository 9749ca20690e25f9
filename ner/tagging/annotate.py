"""Raw text -> documents with sentences, tokens, tags and entities whose character offsets slice the input.

The one place where text meets the model: `ner.tag`, the MLflow pyfunc and the Spark path all call it, so all
three give the same entities for the same text.

Bulk tagging is throughput-bound, so `Annotator.annotate` works on a whole chunk of documents at once and keeps
the per-token Python work small:

- every distinct word form of the chunk is featurised once (word vector, casing, characters through the char
  encoder) into one feature table, and a batch is a single gather from it;
- sentences of the whole chunk are sorted by length and batched (`ner.batching.bucketed`), so batches hold
  near-equal lengths, and run padded, never packed (`ner.recurrent.run_padded`: the fast oneDNN path);
- Viterbi runs on the whole batch (`ner.crf.CRF.decode`); the BIOES -> IOB2 mapping and the entity spans are
  numpy operations over the chunk (a sentence the tag scheme would not allow, possible only with a softmax head,
  goes through `schemes.convert`, which reads it the conlleval way, so results equal `predict.predict_tags`);
- the cyclic garbage collector is paused while a chunk's records are built;
- `AnnotatorPool` moves the model step into worker processes, overlapping it with tokenising and writing.

Record schema (one per document; `ner.tag` adds "source" and "doc"):
    {"text": str,
     "sentences": [{"start": int, "end": int, "tokens": [str], "offsets": [[start, end]], "tags": [IOB2 tag]}],
     "entities": [{"text": str, "type": str, "start": int, "end": int}]}
All offsets are character (code point) offsets into "text", end exclusive: `text[start:end] == entity["text"]`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
import torch

from ner.data import schemes
from ner.data.batching import MAX_WORD_CHARS, bucketed, context_runs
from ner.data.tokenize import sentences as split_sentences
from ner.data.vocab import casing, word_id
from ner.model.crf import allowed_transitions
from ner.model.recurrent import run_padded
from ner.model.tagger import Tagger

MAX_SENTENCE_TOKENS = 250  # longer sentences are tagged in chunks of this many tokens (bounded memory)
PRECISIONS = ("auto", "fp32", "bf16")
_CHAR_ROWS = 1024  # forms per char-encoder call: small enough to stay in cache, large enough to batch well
_TEXT, _START, _END = attrgetter("text"), attrgetter("start"), attrgetter("end")


@dataclass
class Annotator:
    """A loaded tagger plus the inference settings; `annotate` takes many documents at once for speed.

    Attributes:
        tagger: The model, in eval mode.
        batch_size: Most sentences per inference batch.
        max_tokens: Most padded tokens (sentences x longest) per batch: bounds memory on long sentences.
        max_sentence_tokens: Longer sentences are cut into pieces of this many tokens for tagging.
        device: Torch device of the model.
        precision: "fp32", or "bf16" to run the recurrent encoder in bfloat16 (about 2x faster on CPUs with
            AVX512-BF16 or AMX; tags can differ from fp32 on near ties), or "auto": bf16 where the CPU has it
            natively, else fp32. Holds the resolved choice after construction.
        seconds: Time spent per stage (tokenise, features, model, decode, records), summed over calls: where
            bulk tagging spends its time (`ner.tag` and `pipelines/bench_tag.py` report it).
    """

    tagger: Tagger
    batch_size: int = 512
    max_tokens: int = 20_000
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS
    device: str = "cpu"
    precision: str = "fp32"
    seconds: Counter = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = resolve_precision(self.precision, self.device)
        self.tagger = self.tagger.to(self.device).eval()
        self._dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self._rnn_weights = {name: p.detach().to(self._dtype) for name, p in self.tagger.rnn.named_parameters()}
        self._labels = _LabelMap(self.tagger)
        self._chars = _char_lookup(self.tagger.featurizer.chars.stoi)

    def tag_tokens(self, sentences: list[list[str]]) -> list[list[str]]:
        """IOB2 tags for pre-tokenised sentences (any length; an empty sentence gets no tags)."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        words = [w for sent in sentences for w in sent]
        tags = self._labels.names(self._tag(words, lengths))
        bounds = _bounds(lengths)
        return [tags[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]

    def annotate(self, texts: list[str]) -> list[dict]:
        """One record per text, in order: {text, sentences: [{start, end, tokens, offsets, tags}], entities}."""
        with _gc_paused():
            prepared = self.prepare(texts)
            return self.finish(prepared, self.tag_prepared(prepared))

    def annotate_tokens(self, documents: list[list[list[str]]]) -> list[dict]:
        """Records for pre-tokenised documents (lists of sentences of tokens), in the schema of `annotate`.

        The text is rebuilt with one space between tokens and a newline between sentences, so offsets and
        entity texts follow the same rules as for raw text. Sentences are tagged whole, however long.
        """
        with _gc_paused():
            prepared = self.prepare_tokens(documents)
            return self.finish(prepared, self.tag_prepared(prepared))

    def prepare(self, texts: list[str]) -> Prepared:
        """Tokenise and split `texts` into one flat token list (the first of the three steps of `annotate`)."""
        tick = time.perf_counter()
        out = Prepared(list(texts))
        for text in texts:
            doc = split_sentences(text, self.max_sentence_tokens)
            out.doc_sents.append(len(doc))
            for sent in doc:
                out.words.extend(map(_TEXT, sent))
                out.starts.extend(map(_START, sent))
                out.ends.extend(map(_END, sent))
                out.sent_lens.append(len(sent))
        self.seconds["tokenise"] += time.perf_counter() - tick
        return out

    def prepare_tokens(self, documents: list[list[list[str]]]) -> Prepared:
        """`prepare` for pre-tokenised documents: the text is rebuilt around the tokens."""
        out = Prepared([])
        for doc in documents:
            doc = [sent for sent in doc if sent]
            text, pos = [], 0
            for sent in doc:
                for word in sent:
                    out.starts.append(pos)
                    pos += len(word)
                    out.ends.append(pos)
                    pos += 1
                out.words.extend(sent)
                out.sent_lens.append(len(sent))
                text.append(" ".join(sent))
            out.texts.append("\n".join(text))
            out.doc_sents.append(len(doc))
        return out

    def tag_prepared(self, prepared: Prepared) -> np.ndarray:
        """IOB2 label ids of every token of `prepared` (the model step; `AnnotatorPool` runs it elsewhere)."""
        return self._tag(prepared.words, prepared.lengths, prepared.doc_sents)

    def finish(self, prepared: Prepared, ids: np.ndarray) -> list[dict]:
        """The records of `prepared`, given the IOB2 ids of its tokens (the last step of `annotate`)."""
        tick = time.perf_counter()
        with _gc_paused():
            p = prepared
            records = _build_records(p.texts, p.words, p.starts, p.ends, p.lengths, p.doc_sents, ids, self._labels)
        self.seconds["records"] += time.perf_counter() - tick
        return records

    def _tag(self, words: list[str], lengths: np.ndarray, doc_sents: list[int] | None = None) -> np.ndarray:
        """IOB2 label ids (`self._labels.iob2`) of every token of `words`, split into sentences by `lengths`.

        With `doc_sents` (sentences per document) a model trained with document context reads runs of a
        document's sentences as one sequence, as it was trained; tags are still made valid per sentence.
        """
        if not words:
            return np.zeros(0, dtype=np.int64)
        tick = time.perf_counter()
        form_of, features = self._features(words)
        tock = time.perf_counter()
        self.seconds["features"] += tock - tick
        model_ids = self._predict(form_of, features, self._sequence_lengths(lengths, doc_sents))
        tick = time.perf_counter()
        out = self._labels.to_iob2(model_ids, lengths)
        self.seconds["decode"] += time.perf_counter() - tick
        return out

    def _sequence_lengths(self, lengths: np.ndarray, doc_sents: list[int] | None) -> np.ndarray:
        """Tokens per sequence the model reads: one sentence each, or runs of them (`batching.context_runs`)."""
        context = self.tagger.cfg.context_tokens
        if not context or doc_sents is None or len(doc_sents) == len(lengths):
            return lengths
        documents = np.repeat(np.arange(len(doc_sents)), doc_sents).tolist()
        runs = context_runs(lengths.tolist(), documents, context)
        return np.add.reduceat(lengths, [r.start for r in runs])

    @torch.inference_mode()
    def _features(self, words: list[str]) -> tuple[np.ndarray, torch.Tensor]:
        """(form id of every token, feature table (forms + 1, D)); row 0 is the padding form (all zeros)."""
        index = dict.fromkeys(words)
        forms = list(index)
        index = dict(zip(forms, range(1, len(forms) + 1), strict=True))
        form_of = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
        return form_of, self._form_table(forms)

    def _form_table(self, forms: list[str]) -> torch.Tensor:
        """Word vector, casing vector and character vector of each form side by side, as `Tagger.embed` has them."""
        tagger, vocab = self.tagger, self.tagger.featurizer.words
        device = torch.device(self.device)
        word_ids = torch.tensor([0, *(word_id(vocab, f) for f in forms)], device=device)
        parts = [tagger.lookup_words(word_ids[None])[0]]
        if tagger.case_embed is not None:
            parts.append(tagger.case_embed(torch.tensor([0, *map(casing, forms)], device=device)))
        if tagger.char_encoder is not None:
            parts.append(self._char_vectors(forms))
        return torch.cat(parts, dim=1)

    def _char_vectors(self, forms: list[str]) -> torch.Tensor:
        """Char-encoder output per form (row 0: padding), run on forms of similar length together.

        Each call gets only as many character positions as its longest form needs, instead of the chunk's
        longest (often 40), which makes this about 3x faster; padding positions do not change the result.
        """
        chars, lens = self._char_matrix(forms)
        order = np.argsort(lens, kind="stable")
        out = None
        for i in range(0, len(order), _CHAR_ROWS):
            rows = order[i : i + _CHAR_ROWS]
            width = max(1, int(lens[rows].max()))
            vectors = self.tagger.char_encoder(torch.from_numpy(chars[rows, :width]).to(self.device))
            if out is None:
                out = vectors.new_empty(len(order), vectors.size(1))
            out[torch.from_numpy(rows).to(self.device)] = vectors
        return out

    def _char_matrix(self, forms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(forms + 1, longest) character ids, each form cut to MAX_WORD_CHARS (row 0 and padding are 0), and the
        number of characters of each row."""
        cut = [f[:MAX_WORD_CHARS] for f in forms]
        lens = np.fromiter(map(len, cut), dtype=np.int64, count=len(cut))
        codes = np.frombuffer("".join(cut).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        matrix = np.zeros((len(cut) + 1, max(1, int(lens.max(initial=0)))), dtype=np.int64)
        rows = np.repeat(np.arange(1, len(cut) + 1), lens)
        cols = np.arange(len(codes)) - np.repeat(np.cumsum(lens) - lens, lens)
        matrix[rows, cols] = self._chars[codes]
        return matrix, np.concatenate([[0], lens])

    @torch.inference_mode()
    def _predict(self, form_of: np.ndarray, features: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
        """Model label ids of every token: length-bucketed batches, each embedded, encoded and decoded at once."""
        out = np.zeros(len(form_of), dtype=np.int64)
        first = _bounds(lengths)[:-1]
        device = torch.device(self.device)
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
            forms = torch.from_numpy(np.where(valid, form_of[where], 0)).to(device)
            x = features.index_select(0, forms.reshape(-1)).view(*forms.shape, -1)  # rows: faster than x[forms]
            emissions = self._emissions(x, torch.from_numpy(lens))
            tock = time.perf_counter()
            best = self._decode(emissions, torch.from_numpy(valid).to(device))
            out[where[valid]] = best[valid]
            self.seconds["model"] += tock - tick
            self.seconds["decode"] += time.perf_counter() - tock
        return out

    def _emissions(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Tag scores (B, T, K) from token features (B, T, D)."""
        return self.tagger.proj(run_padded(self.tagger.rnn, x.to(self._dtype), lengths, self._rnn_weights).float())

    def _decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """Best label ids (B, T): Viterbi over the whole batch, or the argmax for a softmax head."""
        crf = self.tagger.crf
        best = crf.decode(emissions, mask) if crf is not None else emissions.argmax(2)
        return best.cpu().numpy()


def resolve_precision(precision: str, device: str) -> str:
    """ "auto" -> "bf16" on a CPU with native bfloat16 (AVX512-BF16 or AMX), where it is faster end to end at the
    same test F1 (`pipelines/bench_precision.py`); "fp32" elsewhere, where bf16 would be emulated and slow."""
    if precision != "auto":
        return precision
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if torch.device(device).type == "cpu" and native else "fp32"


@dataclass
class Prepared:
    """A chunk of documents as flat token lists: what the model needs (words, lengths) and what records need."""

    texts: list[str]
    words: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # character offsets of every token in its document
    ends: list[int] = field(default_factory=list)
    sent_lens: list[int] = field(default_factory=list)  # tokens per sentence
    doc_sents: list[int] = field(default_factory=list)  # sentences per document

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray(self.sent_lens, dtype=np.int64)


class _LabelMap:
    """Model label ids -> IOB2 label ids, plus what the entity finder needs to know about each IOB2 label."""

    def __init__(self, tagger: Tagger):
        labels = tagger.featurizer.labels.itos
        self.scheme = tagger.scheme
        self.model_labels = labels
        iob2 = schemes.labels_for(schemes.entity_types(labels), "iob2")
        self.iob2 = iob2
        self.iob2_id = {tag: i for i, tag in enumerate(iob2)}
        # per-label mapping, exact for sequences the scheme allows (BIOES E- -> I-, S- -> B-)
        prefix_map = {"O": "O", "B": "B", "I": "I", "E": "I", "S": "B"}
        direct = [self.iob2_id[_retag(tag, prefix_map)] for tag in labels]
        self.direct = np.asarray(direct, dtype=np.int64)
        self.fast = self.scheme in ("iob2", "bioes")
        start, end, trans = allowed_transitions(self.scheme, labels)
        self.start_ok, self.end_ok, self.trans_ok = start.numpy(), end.numpy(), trans.numpy()
        self.is_begin = np.asarray([t.startswith("B-") for t in iob2])
        self.is_inside = np.asarray([t.startswith("I-") for t in iob2])
        self.types = [schemes.split_tag(t)[1] for t in iob2]

    def names(self, ids: np.ndarray) -> list[str]:
        return list(map(self.iob2.__getitem__, ids.tolist()))

    def to_iob2(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """IOB2 ids of model label ids; sentences the scheme forbids are read like conlleval reads them."""
        if not len(ids):
            return ids
        bad = self._invalid_sentences(ids, lengths) if self.fast else np.flatnonzero(lengths)
        out = self.direct[ids]
        bounds = _bounds(lengths)
        for s in bad.tolist():
            a, b = bounds[s], bounds[s + 1]
            tags = schemes.convert([self.model_labels[i] for i in ids[a:b].tolist()], "iob2")
            out[a:b] = [self.iob2_id[t] for t in tags]
        return out

    def _invalid_sentences(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        bounds = _bounds(lengths)
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
        continues[_bounds(lengths)[:-1][lengths > 0]] = False  # a sentence start never continues an entity
        first = np.flatnonzero(self.is_begin[iob2])
        stops = np.append(np.flatnonzero(~continues), len(iob2))
        return first, stops[np.searchsorted(stops, first, side="right")]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a chunk's records are built.

    A chunk allocates a few container objects per token and none of them form cycles, yet the allocations alone
    trigger repeated full collections over every live object (the vocabularies, the previous chunk): that made
    building records 5-10x slower. Paused, the young objects are looked at once, when collection resumes.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _retag(tag: str, prefix_map: dict[str, str]) -> str:
    prefix, typ = schemes.split_tag(tag)
    return "O" if prefix == "O" else f"{prefix_map[prefix]}-{typ}"


def _bounds(lengths: np.ndarray) -> np.ndarray:
    """Start of every sentence in the flat token list, plus the total at the end."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _char_lookup(stoi: dict[str, int]) -> np.ndarray:
    """Code point -> character id (1 = unknown) for every Unicode code point: one array index per character."""
    table = np.ones(0x110000, dtype=np.int64)
    for char, i in stoi.items():
        if len(char) == 1:
            table[ord(char)] = i
    return table


def _build_records(texts, words, starts, ends, lengths, doc_sents, ids, labels: _LabelMap) -> list[dict]:
    """The records of a chunk from its flat token lists and IOB2 ids."""
    tags = labels.names(ids)
    bounds = _bounds(lengths).tolist()
    first, stop = labels.spans(ids, lengths)
    ent_start = [starts[i] for i in first.tolist()]
    ent_end = [ends[i - 1] for i in stop.tolist()]
    ent_type = [labels.types[i] for i in ids[first].tolist()]
    doc_first = np.cumsum([0, *doc_sents]).tolist()  # first sentence of every document, plus the total
    doc_ents = np.searchsorted(first, [bounds[s] for s in doc_first]).tolist()  # first entity of every document
    records = []
    for d, text in enumerate(texts):
        sentences = []
        for s in range(doc_first[d], doc_first[d + 1]):
            a, b = bounds[s], bounds[s + 1]
            sentences.append(
                {
                    "start": starts[a],
                    "end": ends[b - 1],
                    "tokens": words[a:b],
                    "offsets": list(map(list, zip(starts[a:b], ends[a:b], strict=True))),
                    "tags": tags[a:b],
                }
            )
        e0, e1 = doc_ents[d], doc_ents[d + 1]
        entities = [
            {"text": text[s:e], "type": t, "start": s, "end": e}
            for s, e, t in zip(ent_start[e0:e1], ent_end[e0:e1], ent_type[e0:e1], strict=True)
        ]
        records.append({"text": text, "sentences": sentences, "entities": entities})
    return records


def document(text: str, sentences: list, tags: list[list[str]]) -> dict:
    """The output record of one document (the schema documented in the README)."""
    out_sentences, entities = [], []
    for sent, seq in zip(sentences, tags, strict=True):
        out_sentences.append(
            {
                "start": sent[0].start,
                "end": sent[-1].end,
                "tokens": [t.text for t in sent],
                "offsets": [[t.start, t.end] for t in sent],
                "tags": seq,
            }
        )
        for first, last, typ in schemes.spans(seq):
            start, end = sent[first].start, sent[last - 1].end
            entities.append({"text": text[start:end], "type": typ, "start": start, "end": end})
    return {"text": text, "sentences": out_sentences, "entities": entities}


def token_entities(tokens: list[str], tags: list[str]) -> list[dict]:
    """Entities of a pre-tokenised sentence, with token positions (end exclusive)."""
    return [
        {"text": " ".join(tokens[s:e]), "type": typ, "token_start": s, "token_end": e}
        for s, e, typ in schemes.spans(tags)
    ]
