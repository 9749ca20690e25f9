"""Inference over many sentences: length-bucketed batches, decoded in the batch, returned in input order."""

from __future__ import annotations

import torch

from ner.data import schemes
from ner.data.batching import Encoded, bucketed
from ner.model.tagger import Tagger


def predict_ids(
    model: Tagger, encoded: Encoded, batch_size: int = 256, max_tokens: int = 20_000, device: torch.device | str = "cpu"
) -> list[list[int]]:
    """Best tag ids for every sentence of `encoded`, in input order.

    A model trained with document context (`context_tokens`) reads each sentence with its neighbours, as it did in
    training; the tags still come back per sentence, so scores are counted exactly as without context.
    """
    if model.cfg.context_tokens and encoded.documents is not None:
        joined, runs = encoded.in_context(model.cfg.context_tokens)
        out = []
        for run, ids in zip(runs, _predict_ids(model, joined, batch_size, max_tokens, device), strict=True):
            for i in run:
                out.append(ids[: len(encoded.forms[i])])
                ids = ids[len(encoded.forms[i]) :]
        return out
    return _predict_ids(model, encoded, batch_size, max_tokens, device)


def _predict_ids(
    model: Tagger, encoded: Encoded, batch_size: int, max_tokens: int, device: torch.device | str
) -> list[list[int]]:
    was_training = model.training
    model.eval()
    out: list[list[int]] = [[] for _ in range(len(encoded))]
    lengths = [len(f) for f in encoded.forms]
    with torch.inference_mode():
        for index in bucketed(lengths, batch_size, max_tokens=max_tokens):
            index = [i for i in index if lengths[i]]
            if not index:
                continue
            for i, tags in zip(index, model.decode(encoded.batch(index).to(device)), strict=True):
                out[i] = tags
    model.train(was_training)
    return out


def predict_tags(model: Tagger, encoded: Encoded, scheme: str = "iob2", **kwargs) -> list[list[str]]:
    """Tag strings in `scheme` (IOB2 by default: what seqeval scores and what most users expect)."""
    itos = model.featurizer.labels.itos
    return [schemes.convert([itos[i] for i in seq], scheme) for seq in predict_ids(model, encoded, **kwargs)]
