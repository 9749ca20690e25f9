"""Raw text -> documents with sentences, tokens, tags and entities whose character offsets slice the input.

The one place where text meets the model: `ner.tag`, the MLflow pyfunc and the Spark workers all call it, and it
tags through the one inference engine (`ner.model.engine.Engine`) that training scores with, so all of them give
the same entities for the same text, and the same tags the dev and test scores counted.

Bulk tagging is throughput-bound, so `Annotator.annotate` works on a whole chunk of documents at once: the chunk's
sentences become one flat token list that the engine tags in one call (each distinct form featurised once,
length-bucketed padded batches, Viterbi on whole batches), and the entity spans and records are built with numpy
over the whole chunk, with the cyclic garbage collector paused. `ner.tagging.pool` moves the engine step into
worker processes, overlapping it with tokenising and writing (`prepare`, `tag_prepared`, `finish`).

Record schema (one per document; `ner.tag` adds "source" and "doc"):
    {"text": str,
     "sentences": [{"start": int, "end": int, "tokens": [str], "offsets": [[start, end]], "tags": [IOB2 tag]}],
     "entities": [{"text": str, "type": str, "start": int, "end": int, "score": float}]}
All offsets are character (code point) offsets into "text", end exclusive: `text[start:end] == entity["text"]`.
"score" (with `scores=True`, the default) is the model's probability of that exact span with that type, in [0, 1].
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

from ner.data import schemes
from ner.data.tokenize import sentences as split_sentences
from ner.model.engine import PRECISIONS, Engine, LabelMap, Tagged, resolve_precision, token_bounds
from ner.model.tagger import Tagger

__all__ = ["PRECISIONS", "Annotator", "Prepared", "gc_paused", "resolve_precision", "token_entities"]

MAX_SENTENCE_TOKENS = 250  # longer sentences are tagged in chunks of this many tokens (bounded memory)
_TEXT, _START, _END = attrgetter("text"), attrgetter("start"), attrgetter("end")


@dataclass
class Annotator:
    """A loaded tagger plus the inference settings; `annotate` takes many documents at once for speed.

    Attributes:
        tagger: The model.
        batch_size: Most sentences per inference batch.
        max_tokens: Most padded tokens (sentences x longest) per batch: bounds memory on long sentences.
        max_sentence_tokens: Longer sentences are cut into pieces of this many tokens for tagging.
        device: Torch device of the model.
        precision: "fp32", or "bf16" to run the recurrent encoder in bfloat16 (about 2x faster on CPUs with
            AVX512-BF16 or AMX; tags can differ from fp32 on near ties), or "auto": bf16 where the CPU has it
            natively, else fp32. Holds the resolved choice after construction.
        scores: Give every entity a "score": its probability under the model (`Engine.tag`).
        min_score: Keep only entities scored at least this (their tokens' tags stay; the others' become O).
        seconds: Time spent per stage (tokenise, features, model, decode, records), summed over calls: where
            bulk tagging spends its time (`ner.tag` and `python -m benchmarks.tag` report it).
    """

    tagger: Tagger
    batch_size: int = 512
    max_tokens: int = 20_000
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS
    device: str = "cpu"
    precision: str = "fp32"
    scores: bool = True
    min_score: float = 0.0
    engine: Engine = field(init=False, repr=False)
    own_tags: list[list[str]] = field(init=False, repr=False, default_factory=list)  # of the last `finish`

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.precision, self.device)
        self.engine = Engine(self.tagger, self.batch_size, self.max_tokens, self.device)

    @property
    def seconds(self) -> Counter:
        return self.engine.seconds

    def tag_tokens(self, sentences: list[list[str]]) -> list[list[str]]:
        """IOB2 tags for pre-tokenised sentences (any length; an empty sentence gets no tags)."""
        return self.engine.predict(sentences, precision=self.precision)

    def annotate(self, texts: list[str]) -> list[dict]:
        """One record per text, in order: {text, sentences: [{start, end, tokens, offsets, tags}], entities}."""
        with gc_paused():
            prepared = self.prepare(texts)
            return self.finish(prepared, self.tag_prepared(prepared))

    def annotate_tokens(self, documents: list[list[list[str]]]) -> list[dict]:
        """Records for pre-tokenised documents (lists of sentences of tokens), in the schema of `annotate`.

        The text is rebuilt with one space between tokens and a newline between sentences, so offsets and
        entity texts follow the same rules as for raw text. Sentences are tagged whole, however long.
        """
        with gc_paused():
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

    def tag_prepared(self, prepared: Prepared) -> Tagged:
        """Tags and entities of every token of `prepared` (the engine step; `AnnotatorPool` runs it elsewhere)."""
        p = prepared
        return self.engine.tag(p.words, p.lengths, p.doc_sents, self.precision, scores=self.scores)

    def finish(self, prepared: Prepared, tagged: Tagged) -> list[dict]:
        """The records of `prepared`, given what the engine said about its tokens (the last step of `annotate`)."""
        tick = time.perf_counter()
        tagged = tagged.at_least(self.min_score, self.engine.labels)
        self.own_tags = tagged.tags(self.engine.labels, own=True)  # strict-mode scoring of gold input (ner.tag)
        with gc_paused():
            p = prepared
            records = _build_records(p.texts, p.words, p.starts, p.ends, p.doc_sents, tagged, self.engine.labels)
        self.seconds["records"] += time.perf_counter() - tick
        return records


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


def _build_records(texts, words, starts, ends, doc_sents, tagged: Tagged, labels: LabelMap) -> list[dict]:
    """The records of a chunk from its flat token lists and what the engine said about them."""
    ids, first, stop = tagged.iob2, tagged.first, tagged.stop
    tags = labels.names(ids)
    bounds = token_bounds(tagged.lengths).tolist()
    ent_start = [starts[i] for i in first.tolist()]
    ent_end = [ends[i - 1] for i in stop.tolist()]
    ent_type = [labels.types[i] for i in ids[first].tolist()]
    ent_score = [round(x, 4) for x in tagged.score.tolist()] if tagged.score is not None else None
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
        if ent_score is not None:
            for entity, score in zip(entities, ent_score[e0:e1], strict=True):
                entity["score"] = score
        records.append({"text": text, "sentences": sentences, "entities": entities})
    return records


def token_entities(tokens: list[str], tags: list[str]) -> list[dict]:
    """Entities of a pre-tokenised sentence, with token positions (end exclusive)."""
    return [
        {"text": " ".join(tokens[s:e]), "type": typ, "token_start": s, "token_end": e}
        for s, e, typ in schemes.spans(tags)
    ]
