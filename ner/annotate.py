"""Raw text -> documents with sentences, tokens, tags and entities whose character offsets slice the input.

The one place where text meets the model: `ner.tag`, the MLflow pyfunc and the Spark path all call it, so all
three give the same entities for the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ner import schemes
from ner.model import Tagger
from ner.predict import predict_tags
from ner.tokenize import sentences as split_sentences

MAX_SENTENCE_TOKENS = 250  # longer sentences are tagged in chunks of this many tokens (bounded memory)


@dataclass
class Annotator:
    """A loaded tagger plus the inference settings; `annotate` takes many documents at once for speed."""

    tagger: Tagger
    batch_size: int = 512
    max_tokens: int = 20_000  # tokens per inference batch (sentences x longest)
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS
    device: str = "cpu"

    def tag_tokens(self, sentences: list[list[str]]) -> list[list[str]]:
        """IOB2 tags for pre-tokenised sentences."""
        encoded = self.tagger.featurizer.encode(sentences)
        return predict_tags(
            self.tagger,
            encoded,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            device=torch.device(self.device),
        )

    def annotate(self, texts: list[str]) -> list[dict]:
        """One record per text, in order: {text, sentences: [{start, end, tokens, offsets, tags}], entities}."""
        split = [split_sentences(text, self.max_sentence_tokens) for text in texts]
        flat = [[tok.text for tok in sent] for doc in split for sent in doc]
        tags = iter(self.tag_tokens(flat))
        return [document(text, doc, [next(tags) for _ in doc]) for text, doc in zip(texts, split, strict=True)]


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
