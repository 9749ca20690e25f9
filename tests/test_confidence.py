"""Entity scores: span marginals against brute-force enumeration, the softmax head's scores, the temperature."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ner.data import schemes
from ner.model.crf import CRF, Spans, allowed_transitions, independent
from ner.model.engine import LabelMap


def random_crf(labels: list[str], scheme: str, constrained: bool, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(labels), allowed_transitions(scheme, labels) if constrained else None)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    return crf


def all_paths(crf: CRF, emissions: torch.Tensor, n: int, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tag sequence of length n (P, n) and its log-probability under the CRF at temperature t (P,)."""
    with torch.no_grad():
        start, end, trans = crf._scores()
        k = emissions.size(1)
        paths = torch.tensor(list(itertools.product(range(k), repeat=n)))
        score = start[paths[:, 0]] + end[paths[:, -1]] + emissions[torch.arange(n), paths].sum(1)
        if n > 1:
            score = score + trans[paths[:, :-1], paths[:, 1:]].sum(1)
        score = score / t
        return paths, score - torch.logsumexp(score, 0)


def brute_force_span(paths, log_p, start: int, tags: list[int], stop_before: int) -> float:
    """P(tags[start:start+len(tags)] == tags and the next tag != stop_before), summed over every sequence."""
    n, after = paths.size(1), start + len(tags)
    hit = (paths[:, start:after] == torch.tensor(tags)).all(1)
    if stop_before >= 0 and after < n:
        hit &= paths[:, after] != stop_before
    return float(log_p[hit].exp().sum())


def every_entity(labels: list[str], scheme: str, n: int) -> list[tuple[int, int, str]]:
    types = schemes.entity_types(labels)
    return [(a, b, typ) for a in range(n) for b in range(a + 1, n + 1) for typ in types]


@pytest.mark.parametrize("scheme", ["bioes", "iob2"])
@pytest.mark.parametrize("constrained", [True, False])
def test_span_marginals_equal_brute_force_enumeration(scheme, constrained):
    labels = schemes.labels_for(["X", "Y"], scheme)
    label_map = LabelMap(labels, scheme)
    lengths = [1, 2, 3, 4]
    crf = random_crf(labels, scheme, constrained, seed=len(labels) + constrained)
    torch.manual_seed(1)
    emissions = torch.randn(len(lengths), max(lengths), len(labels)) * 2
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    for temperature in (1.0, 2.5):
        rows, firsts, stops, iob2 = [], [], [], []
        for row, n in enumerate(lengths):
            for a, b, typ in every_entity(labels, scheme, n):
                tags = schemes.from_spans([(a, b, typ)], n, "iob2")
                rows.append(row)
                firsts.append(len(iob2) + a)
                stops.append(len(iob2) + b)
                iob2 += [label_map.iob2_id[t] for t in tags]
                # each entity gets its own copy of the sentence in the flat list (spans never overlap there)
        flat = np.asarray(iob2)
        first, stop = np.asarray(firsts), np.asarray(stops)
        cols = np.concatenate([np.arange(lengths[r]) for r in rows])
        spans = label_map.model_spans(flat, first, stop, np.repeat(rows, [lengths[r] for r in rows]), cols, "cpu")
        got = crf.span_probs(emissions, mask, spans, temperature).tolist()
        enumerated = [all_paths(crf, emissions[row, :n], n, temperature) for row, n in enumerate(lengths)]
        for i, (row, a, b) in enumerate(zip(rows, firsts, stops, strict=True)):
            tags = [t for t in spans.tags[i].tolist() if t >= 0]
            want = brute_force_span(*enumerated[row], int(spans.start[i]), tags, int(spans.stop_before[i]))
            assert got[i] == pytest.approx(want, abs=1e-5), (scheme, constrained, row, a, b)
            assert 0.0 <= got[i] <= 1.0


def test_spans_are_written_in_the_models_scheme():
    labels = schemes.labels_for(["X"], "bioes")
    label_map = LabelMap(labels, "bioes")
    iob2 = np.asarray([label_map.iob2_id[t] for t in ["B-X", "I-X", "I-X", "B-X"]])
    spans = label_map.model_spans(iob2, np.asarray([0, 3]), np.asarray([3, 4]), np.zeros(4, int), np.arange(4), "cpu")
    assert [[labels[t] if t >= 0 else None for t in row] for row in spans.tags.tolist()] == [
        ["B-X", "I-X", "E-X"],
        ["S-X", None, None],
    ]
    assert spans.stop_before.tolist() == [-1, -1]  # BIOES: E-/S- already end the entity
    iob2_map = LabelMap(schemes.labels_for(["X"], "iob2"), "iob2")
    spans = iob2_map.model_spans(iob2, np.asarray([0]), np.asarray([3]), np.zeros(4, int), np.arange(4), "cpu")
    assert spans.stop_before.tolist() == [iob2_map.model_labels.index("I-X")]  # IOB2: no I-X may follow


def test_a_softmax_heads_span_score_is_the_product_of_token_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3)  # O, B-X, I-X
    mask = torch.ones(1, 4, dtype=torch.bool)
    spans = Spans(torch.tensor([0]), torch.tensor([1]), torch.tensor([[1, 2]]), torch.tensor([2]))
    got = float(independent(3).span_probs(logits, mask, spans, temperature=1.5))
    p = torch.softmax(logits[0] / 1.5, dim=1)
    assert got == pytest.approx(float(p[1, 1] * p[2, 2] * (1 - p[3, 2])), rel=1e-5)


def test_a_larger_temperature_moves_scores_towards_uncertainty():
    labels = schemes.labels_for(["X"], "bioes")
    crf = random_crf(labels, "bioes", True, seed=3)
    emissions = torch.randn(1, 3, len(labels)) * 4
    mask = torch.ones(1, 3, dtype=torch.bool)
    best = crf.decode(emissions, mask)[0].tolist()
    spans = Spans(torch.tensor([0]), torch.tensor([0]), torch.tensor([best]), torch.tensor([-1]))
    sharp, flat = (float(crf.span_probs(emissions, mask, spans, t)) for t in (0.5, 5.0))
    assert sharp > flat  # the most likely sequence is less certain when every score is divided by more
